"""Pipeline stages: one small Stage class per module (STYLE.md #2)."""
