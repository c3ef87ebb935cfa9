"""The training loop every model shares, its checkpoints, distributed wrappers, the run entry point, the
DiT and VAE trainers and the flow-matching objective."""
