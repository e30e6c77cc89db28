"""synthetic_cxr TFDS builder: generated chest X-ray phantoms (no download).

Importing this package registers the builder, so ``tfds.builder("synthetic_cxr", ...)`` finds it.
"""

# Relative: TFDS's build command (`python -m otcxr_jax.data.build tfds_builders/synthetic_cxr`)
# imports this package by its name.
from .synthetic_cxr_dataset_builder import CLASS_NAMES, Builder, SyntheticCxrConfig

__all__ = ["CLASS_NAMES", "Builder", "SyntheticCxrConfig"]
