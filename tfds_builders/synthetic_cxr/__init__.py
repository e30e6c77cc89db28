"""synthetic_cxr TFDS builder: generated chest X-ray phantoms (no download).

Importing this package registers the builder, so ``tfds.builder("synthetic_cxr", ...)`` finds it.
"""

# Relative: `tfds build tfds_builders/synthetic_cxr` imports this package by its name.
from .synthetic_cxr_dataset_builder import CLASS_NAMES, Builder, SyntheticCxrConfig

__all__ = ["CLASS_NAMES", "Builder", "SyntheticCxrConfig"]
