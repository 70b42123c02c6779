"""FED-GRPO: force/energy disentangled group-relative policy optimisation of an EDM's reverse chain."""
