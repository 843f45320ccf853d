"""Training both GR-1 stages: optimizer, train state, pure train/eval steps, checkpoints, metrics, loop."""
