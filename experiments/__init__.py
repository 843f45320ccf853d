"""Entry points (python -m experiments.X) and ml_collections configs."""
