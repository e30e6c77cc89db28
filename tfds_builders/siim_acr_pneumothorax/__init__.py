"""SIIM-ACR Pneumothorax Segmentation TFDS builder (manual download)."""

from .siim_acr_pneumothorax_dataset_builder import CLASS_NAMES, Builder

__all__ = ["CLASS_NAMES", "Builder"]
