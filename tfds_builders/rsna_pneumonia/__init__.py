"""RSNA Pneumonia Detection Challenge TFDS builder (manual download)."""

from .rsna_pneumonia_dataset_builder import CLASS_NAMES, Builder

__all__ = ["CLASS_NAMES", "Builder"]
