"""Training: EDM pretraining, the trainers' callback contract, and the device rule with torchrun support."""
