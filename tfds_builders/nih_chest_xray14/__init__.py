"""NIH ChestX-ray14 TFDS builder (manual download)."""

from .nih_chest_xray14_dataset_builder import CLASS_NAMES, Builder

__all__ = ["CLASS_NAMES", "Builder"]
