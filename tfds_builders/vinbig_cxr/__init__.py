"""VinBig-CXR (VinDr-CXR) TFDS builder (manual download)."""

from .vinbig_cxr_dataset_builder import CLASS_NAMES, Builder

__all__ = ["CLASS_NAMES", "Builder"]
