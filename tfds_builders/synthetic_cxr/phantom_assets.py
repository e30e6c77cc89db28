"""Per-resolution precomputed textures of the chest phantom (built once, then only cropped).

* Vessel trees: pulmonary vascular markings radiating from a hilum at the centre of a
  ``(2R, 2R)`` canvas, as a binary tree of tapering segments with a cylindrical density profile.
  A phantom crops an ``(R, R)`` view so that the canvas centre lands on its hilum: no per-image
  cost beyond a multiply.
* Smooth noise: zero-mean, unit-variance Gaussian random fields on ``(2R, 2R)`` at a few
  correlation lengths (Gaussian-filtered white noise, via FFT), cropped at a random offset for
  parenchymal texture, patchy airspace opacity and the exposure non-uniformity.
* Burned-in text: a 5x7 bitmap font for laterality markers and annotations, box-resampled to the
  requested height.

Everything is drawn from fixed seeds, so assets (and therefore phantoms) are reproducible.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from PIL import Image

from . import phantom_geometry as geo

NUM_VESSEL_TREES = 8
NOISE_SCALES = (0.02, 0.06, 0.25)  # correlation lengths, in image half-widths
NUM_NOISE_FIELDS = 4

_FONT = {
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "I": ("01110", "00100", "00100", "00100", "00100", "00100", "01110"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "N": ("10001", "11001", "10101", "10011", "10001", "10001", "10001"),
    "O": ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "S": ("01111", "10000", "10000", "01110", "00001", "00001", "11110"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
    " ": ("00000",) * 7,
}


@dataclasses.dataclass(frozen=True)
class Assets:
  """Textures for one resolution ``R``.

  Attributes:
    resolution: image side ``R``.
    vessels: ``(NUM_VESSEL_TREES, 2R, 2R)`` vessel density, hilum at pixel ``(R, R)``.
    noise: ``(len(NOISE_SCALES), NUM_NOISE_FIELDS, 2R, 2R)`` unit-variance smooth fields.
  """

  resolution: int
  vessels: np.ndarray
  noise: np.ndarray

  def vessel_view(self, tree: int, row: float, col: float) -> np.ndarray:
    """``(R, R)`` view of a vessel tree whose hilum sits at pixel ``(row, col)`` of the image."""
    r = self.resolution
    r0 = int(np.clip(round(r - row), 0, r))
    c0 = int(np.clip(round(r - col), 0, r))
    return self.vessels[tree, r0:r0 + r, c0:c0 + r]

  def noise_view(self, scale: int, field: int, row: int, col: int) -> np.ndarray:
    """``(R, R)`` view of a smooth noise field at offset ``(row, col)`` in ``[0, R]``."""
    r = self.resolution
    return self.noise[scale, field, row:row + r, col:col + r]


@functools.lru_cache(maxsize=4)
def assets(resolution: int) -> Assets:
  """Builds (and caches) the textures for one resolution."""
  if resolution < 32:
    raise ValueError(f"resolution must be an int >= 32, got {resolution!r}")
  rng = np.random.default_rng(20240417)
  vessels = np.stack([_vessel_tree(resolution, rng) for _ in range(NUM_VESSEL_TREES)])
  noise = np.stack([
      np.stack([_smooth_noise(2 * resolution, sigma * resolution / 2, rng)
                for _ in range(NUM_NOISE_FIELDS)]) for sigma in NOISE_SCALES])
  vessels.setflags(write=False)
  noise.setflags(write=False)
  return Assets(resolution, vessels, noise)


def _smooth_noise(size: int, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
  """White noise filtered by a Gaussian of ``sigma_px`` pixels (periodic), unit variance."""
  white = rng.standard_normal((size, size))
  f = np.fft.fftfreq(size)
  gain = np.exp(-2.0 * (math.pi * sigma_px) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
  field = np.fft.ifft2(np.fft.fft2(white) * gain).real
  field -= field.mean()
  field /= field.std()
  return field.astype(np.float32)


def _vessel_tree(resolution: int, rng: np.random.Generator) -> np.ndarray:
  """One hilum's vascular tree on a ``(2R, 2R)`` canvas spanning ``[-2, 2]^2`` image units.

  Trunks leave the hilum in all directions and split three times; each segment of width ``w``
  contributes the chord length ``2 sqrt(w^2 - d^2)`` of a cylinder at distance ``d`` from its
  axis, box-blurred to at least one pixel so thin peripheral vessels fade instead of aliasing.
  """
  size = 2 * resolution
  px = 2.0 / resolution
  c = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(px) - np.float32(2.0)
  canvas = np.zeros((size, size), np.float32)
  segments = []
  for angle in np.linspace(0, 2 * math.pi, 10, endpoint=False) + rng.uniform(0, 0.6):
    a0 = angle + rng.uniform(-0.2, 0.2)
    start = rng.uniform(0.03, 0.06)  # trunks leave the hilar shadow, not one point
    stack = [(start * math.cos(a0), start * math.sin(a0), a0, rng.uniform(0.14, 0.22), 0.016, 0)]
    while stack:
      u0, v0, a, length, width, depth = stack.pop()
      u1, v1 = u0 + length * math.cos(a), v0 + length * math.sin(a)
      segments.append((u0, v0, u1, v1, width))
      if depth < 3:
        for sign in (-1.0, 1.0):
          stack.append((u1, v1, a + sign * rng.uniform(0.25, 0.6), length * rng.uniform(0.6, 0.85),
                        width * 0.68, depth + 1))
  for u0, v0, u1, v1, width in segments:
    reach = width + 2 * px
    cols = _index_range(c, min(u0, u1) - reach, max(u0, u1) + reach)
    rows = _index_range(c, min(v0, v1) - reach, max(v0, v1) + reach)
    if cols.stop <= cols.start or rows.stop <= rows.start:
      continue
    uu, vv = np.meshgrid(c[cols], c[rows])
    d = geo.segment_distance(uu, vv, (u0, v0), (u1, v1))
    half = max(width, 0.75 * px)
    chord = np.sqrt(np.clip(1.0 - (d / half) ** 2, 0.0, None))
    canvas[rows, cols] += chord * np.float32(width / half)
  return canvas


def _index_range(c: np.ndarray, lo: float, hi: float) -> slice:
  return slice(int(np.searchsorted(c, lo)), int(np.searchsorted(c, hi)))


@functools.lru_cache(maxsize=64)
def text_bitmap(text: str, height: int) -> np.ndarray:
  """Coverage in ``[0, 1]`` of ``text`` rendered ``height`` pixels tall (float32)."""
  unknown = sorted(set(text) - set(_FONT))
  if unknown:
    raise ValueError(f"text {text!r} has characters without glyphs: {unknown}")
  rows = ["0".join(_FONT[ch][i] for ch in text) for i in range(7)]
  bits = np.array([[int(b) for b in row] for row in rows], np.uint8) * 255
  big = np.kron(bits, np.ones((8, 8), np.uint8))
  width = max(1, round(height * bits.shape[1] / 7))
  small = Image.fromarray(big).resize((width, max(1, height)), Image.Resampling.BOX)
  out = np.asarray(small, np.float32) / 255.0
  out.setflags(write=False)
  return out
