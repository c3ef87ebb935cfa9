"""Models: the causal video VAE, the DiT and its samplers, text encoders, the CLIP aesthetic
model and the reward models. Single-device; nothing here imports training, pipelines or the
captioner. See docs/architecture.md "Layout"."""
