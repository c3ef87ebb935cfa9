"""Reward models for RLHF, distillation checks and evaluation (``base.py`` has the interface)."""
