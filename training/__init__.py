"""Training: the streaming loader, the flow-matching objective, the shared trainer loop and
checkpoints, generation, and the post-training methods (SFT/merge, RLHF, Flow-DPO, distillation,
refiner, thin decoder). See docs/architecture.md "Training side"."""
