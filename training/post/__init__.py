"""Post-training methods on a trained DiT: SFT and merging, ReFL/RLHF and Flow-DPO, distillation (CFG,
TSCD, DMD, adversarial) and its report, the refiner cascade, the thin decoder, reward-model training."""
