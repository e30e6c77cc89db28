"""Source images (DICOM, PNG, JPEG) to fixed-size 8-bit PNGs, and binary masks likewise.

Images are decoded to floats in [0, 1] (DICOMs at 16 bits through ``otcxr_jax.data.dicom``, so no
precision is lost before resizing), resized to ``resolution x resolution`` with Pillow's
antialiased bicubic filter (the aspect ratio is not kept; boxes are stored normalised, and the
original size is stored with each example), and quantised to 8 bits. Masks are resized by area
averaging and thresholded at one half.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib

import numpy as np
from PIL import Image

from otcxr_jax.data import dicom

DICOM_SUFFIXES = (".dcm", ".dicom")


@dataclasses.dataclass(frozen=True)
class SourceImage:
  """A decoded source image: ``pixels`` ``(H, W)`` float32 in [0, 1]; a DICOM's View Position."""

  pixels: np.ndarray
  view_position: str = ""

  @property
  def size(self) -> tuple[int, int]:
    return self.pixels.shape[0], self.pixels.shape[1]


def load(path: pathlib.Path) -> SourceImage:
  """Decodes a DICOM, PNG or JPEG file (grayscale, palette, RGB(A), 8 or 16 bits)."""
  if path.suffix.lower() in DICOM_SUFFIXES:
    image = dicom.read_dicom(path, bit_depth=16)
    return SourceImage(image.pixels.astype(np.float32) / 65535.0, image.view_position)
  with Image.open(path) as pil:
    pil.load()
    return SourceImage(pil_to_float(pil))


def pil_to_float(pil: Image.Image) -> np.ndarray:
  """Grayscale float32 in [0, 1] from an 8-bit, 16-bit or colour Pillow image."""
  if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
    pixels = np.asarray(pil, dtype=np.float64)
    if pixels.min() < 0 or pixels.max() > 65535:
      raise ValueError(f"{pil.mode} image with values outside [0, 65535]")
    return (pixels / 65535.0).astype(np.float32)
  if pil.mode == "F":
    raise ValueError("floating-point images are not supported")
  return np.asarray(pil.convert("L"), dtype=np.float32) / 255.0


def resize(pixels: np.ndarray, resolution: int) -> np.ndarray:
  """Square float32 image by antialiased bicubic interpolation, clipped to [0, 1]."""
  pil = Image.fromarray(np.asarray(pixels, np.float32))
  out = pil.resize((resolution, resolution), Image.Resampling.BICUBIC)
  return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


def resize_mask(mask: np.ndarray, resolution: int) -> np.ndarray:
  """``(resolution, resolution)`` uint8 {0, 1}: area-averaged ``mask > 0``, thresholded at 1/2."""
  pil = Image.fromarray((mask > 0).astype(np.float32))
  area = np.asarray(pil.resize((resolution, resolution), Image.Resampling.BOX), np.float32)
  return (area >= 0.5).astype(np.uint8)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
  return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
  """PNG bytes of a 2-D uint8 array (TFDS stores them as given; no TensorFlow needed)."""
  if pixels.dtype != np.uint8 or pixels.ndim != 2:
    raise ValueError(f"expected a 2-D uint8 array, got {pixels.dtype} {pixels.shape}")
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()
