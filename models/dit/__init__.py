"""Seedance-style video DiT: MM-RoPE, decoupled spatial/temporal attention."""
