"""Flax NNX building blocks of GR-1, one concern per file."""
