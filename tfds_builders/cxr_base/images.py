"""Source images (DICOM, PNG, JPEG) to fixed-size 8-bit PNGs, and binary masks likewise.

Images are decoded to floats in [0, 1] (DICOMs at 16 bits through ``cxr_base.dicom``, so no
precision is lost before resizing), resized to ``resolution x resolution`` with Pillow's
antialiased bicubic filter (the aspect ratio is not kept; boxes are stored normalised, and the
original size is stored with each example), and quantised to 8 bits. Masks are resized by area
averaging and thresholded at one half.

16-bit images (grayscale PNGs, or any 16-bit image Pillow reads) are scaled by the bit depth ``b``
of their data, ``value / (2**b - 1)`` (:func:`sixteen_bit_depth`), because chest X-rays are often
10- to 15-bit detector data in a 16-bit container:

* a PNG with an ``sBIT`` chunk (significant bits ``s``): ``b = s`` when every value fits in ``s``
  bits (the values are stored as they are); otherwise the samples were scaled up to the full 16
  bits, as the PNG specification describes, and ``b = 16``;
* otherwise ``b`` is the smallest of 8, 10, 12, 14, 15, 16 that holds the image's largest value
  (a 12-bit image whose largest value is 3,000 is divided by 4095). An image that uses only part
  of its range can be read at a lower depth than it was written at (a 12-bit image whose values
  all stay below 1024 reads as 10-bit; a full-range 16-bit image whose values all stay below
  32768 reads as 15-bit); write an ``sBIT`` chunk to settle it.

An ``sBIT`` chunk of a colour PNG, or one with a value outside 1..16, is ignored (as libpng does).
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import struct
from typing import BinaryIO

import numpy as np
from PIL import Image

from tfds_builders.cxr_base import dicom

DICOM_SUFFIXES = (".dcm", ".dicom")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
# Bit depths of the data in a 16-bit image without an sBIT chunk: detectors' common depths.
SIXTEEN_BIT_DEPTHS = (8, 10, 12, 14, 15, 16)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class SourceImage:
  """A decoded source image: ``pixels`` ``(H, W)`` float32 in [0, 1]; a DICOM's View Position."""

  pixels: np.ndarray
  view_position: str = ""

  @property
  def size(self) -> tuple[int, int]:
    return self.pixels.shape[0], self.pixels.shape[1]


def load(path: pathlib.Path) -> SourceImage:
  """Decodes a DICOM, PNG or JPEG file (grayscale, palette, RGB(A), 8 or 16 bits).

  16-bit images are scaled by the bit depth of their data (the module's docstring).
  """
  path = pathlib.Path(path)
  if path.suffix.lower() in DICOM_SUFFIXES:
    image = dicom.read_dicom(path, bit_depth=16)
    return SourceImage(image.pixels.astype(np.float32) / 65535.0, image.view_position)
  with Image.open(path) as pil:
    pil.load()
    significant_bits = None
    if pil.format == "PNG" and pil.mode in SIXTEEN_BIT_MODES:
      with path.open("rb") as file:
        significant_bits = png_significant_bits(file)
    return SourceImage(pil_to_float(pil, significant_bits=significant_bits))


def png_significant_bits(file: BinaryIO) -> int | None:
  """The significant bits of a grayscale PNG's ``sBIT`` chunk (its gray value), or None.

  Reads ``file`` (binary, at the PNG's start) up to the image data. None when it is not a PNG, the
  image is in colour, there is no ``sBIT`` chunk before the image data, or its value is not in
  1..(the PNG's bit depth).
  """
  if file.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
    return None
  bit_depth, color_type = 0, None
  while len(header := file.read(8)) == 8:
    length, kind = struct.unpack(">I4s", header)
    if kind == b"IHDR":
      data = file.read(length)
      if len(data) < 10:
        return None
      bit_depth, color_type = data[8], data[9]
    elif kind == b"sBIT":
      data = file.read(length)
      if color_type in (0, 4) and data and 1 <= data[0] <= bit_depth:  # gray, gray + alpha
        return int(data[0])
      return None
    elif kind in (b"PLTE", b"IDAT", b"IEND"):  # an sBIT chunk comes before these
      return None
    else:
      file.seek(length, io.SEEK_CUR)
    file.seek(4, io.SEEK_CUR)  # CRC
  return None


def sixteen_bit_depth(pixels: np.ndarray, significant_bits: int | None = None) -> int:
  """The bit depth ``b`` a 16-bit image's values are divided by ``2**b - 1`` at.

  Args:
    pixels: the stored values (in [0, 65535]).
    significant_bits: the PNG's ``sBIT`` value, if it has one.

  Returns:
    ``significant_bits`` if every value fits in it, else 16 (samples scaled up to the full 16
    bits); without ``significant_bits``, the smallest of :data:`SIXTEEN_BIT_DEPTHS` that holds
    the largest value.
  """
  peak = int(np.max(pixels)) if np.size(pixels) else 0
  if significant_bits is not None:
    return significant_bits if peak < 2**significant_bits else 16
  return next(b for b in SIXTEEN_BIT_DEPTHS if peak < 2**b)


def pil_to_float(pil: Image.Image, *, significant_bits: int | None = None) -> np.ndarray:
  """Grayscale float32 in [0, 1] from an 8-bit, 16-bit or colour Pillow image.

  A 16-bit image is divided by ``2**b - 1``, ``b = sixteen_bit_depth(pixels, significant_bits)``.
  """
  if pil.mode in SIXTEEN_BIT_MODES:
    pixels = np.asarray(pil, dtype=np.float64)
    if pixels.min() < 0 or pixels.max() > 65535:
      raise ValueError(f"{pil.mode} image with values outside [0, 65535]")
    depth = sixteen_bit_depth(pixels, significant_bits)
    return (pixels / (2**depth - 1)).astype(np.float32)
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
