"""A minimal JPEG lossless encoder (ITU-T T.81 Annex H), to write compressed test DICOMs.

Process 14, one component, selection value 1 (predictor ``Px = Ra``, the left neighbour), point
transform 0. Prediction follows H.1.2.1: the first sample of the image is predicted by
``2**(P-1)``, the rest of the first row by the left neighbour, the first sample of every other row
by the sample above. Differences are taken modulo 2**16 and coded as a Huffman-coded category
``SSSS`` (H.1.2.2, Table H.2) followed by ``SSSS`` additional bits (F.1.2.1.1: the difference if
positive, the difference minus one if negative). The Huffman table gives every category 0-16 a
5-bit code, which is a valid canonical table (no all-ones code).
"""

from __future__ import annotations

import struct

import numpy as np

_CODE_LENGTH = 5
_CATEGORIES = 17


def _segment(marker: int, payload: bytes) -> bytes:
  return struct.pack(">HH", marker, len(payload) + 2) + payload


class _BitWriter:

  def __init__(self):
    self._bytes = bytearray()
    self._acc = 0
    self._nbits = 0

  def write(self, value: int, nbits: int) -> None:
    self._acc = (self._acc << nbits) | (value & ((1 << nbits) - 1))
    self._nbits += nbits
    while self._nbits >= 8:
      self._nbits -= 8
      byte = (self._acc >> self._nbits) & 0xFF
      self._bytes.append(byte)
      if byte == 0xFF:
        self._bytes.append(0x00)  # byte stuffing (F.1.2.3)
    self._acc &= (1 << self._nbits) - 1

  def flush(self) -> bytes:
    if self._nbits:
      self.write((1 << (8 - self._nbits)) - 1, 8 - self._nbits)  # pad with 1-bits
    return bytes(self._bytes)


def encode(image: np.ndarray, precision: int) -> bytes:
  """Encodes a 2-D unsigned integer image with ``precision`` bits per sample (2-16)."""
  if image.ndim != 2 or not 2 <= precision <= 16:
    raise ValueError("expected a 2-D image and a precision in [2, 16]")
  x = image.astype(np.int64)
  if x.min() < 0 or x.max() >= 2**precision:
    raise ValueError(f"sample values do not fit in {precision} bits")
  height, width = x.shape
  pred = np.empty_like(x)
  pred[0, 0] = 1 << (precision - 1)
  pred[0, 1:] = x[0, :-1]
  pred[1:, 0] = x[:-1, 0]
  pred[1:, 1:] = x[1:, :-1]
  diff = (x - pred) % 65536
  diff = np.where(diff > 32768, diff - 65536, diff)  # in [-32767, 32768]

  bits = _BitWriter()
  for d in diff.ravel().tolist():
    ssss = abs(d).bit_length()
    bits.write(ssss, _CODE_LENGTH)  # the category's code: its value in 5 bits
    if 0 < ssss < 16:
      bits.write(d if d > 0 else d - 1, ssss)

  counts = [0] * 16
  counts[_CODE_LENGTH - 1] = _CATEGORIES
  sof3 = struct.pack(">BHHB", precision, height, width, 1) + bytes([1, 0x11, 0])
  dht = bytes([0x00]) + bytes(counts) + bytes(range(_CATEGORIES))
  sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns, Cs, Td/Ta, Ss = predictor 1, Se, Ah/Al
  return (b"\xff\xd8" + _segment(0xFFC3, sof3) + _segment(0xFFC4, dht) + _segment(0xFFDA, sos)
          + bits.flush() + b"\xff\xd9")
