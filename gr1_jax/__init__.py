"""GR-1 in JAX/Flax NNX. Importing the package is cheap: submodules import jax themselves."""
__version__ = "0.1.0"
