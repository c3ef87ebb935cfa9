"""Sampling: generation to mp4 (one prompt or a batch), its json record, the settings every sampling path
shares, adaptive step counts."""
