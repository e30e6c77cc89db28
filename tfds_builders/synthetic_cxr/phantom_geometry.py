"""Soft-edged shape primitives and the patient-to-image frame used by the chest phantom.

Every shape is described by an approximate signed distance ``d`` in patient units (negative
inside) and turned into a coverage map with a linear ramp ``clip(1/2 - d/w, 0, 1)`` of width
``w`` (at least about one pixel), i.e. the box-filtered (anti-aliased) indicator of the shape.
Only shapes that are small in the image are evaluated inside a pixel window (:meth:`Frame.window`),
which keeps the cost of a phantom close to a handful of full-image passes.

Coordinates: the image spans ``[-1, 1]`` in ``x`` (columns, left to right) and ``y`` (rows, top to
bottom). The patient frame ``(u, v)`` is the image frame seen through a similarity transform,
``(x, y) = s R(theta) (u, v) + (x0, y0)``; ``u < 0`` is the patient's right (image left, as in a
frontal radiograph viewed by a reader) and ``v`` grows towards the feet.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

Window = tuple[slice, slice]


@functools.lru_cache(maxsize=8)
def pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates ``(x, y)`` in ``[-1, 1]``, each of shape ``(R, R)``, float32."""
  c = (np.arange(resolution, dtype=np.float32) + 0.5) * (2.0 / resolution) - 1.0
  x, y = np.meshgrid(c, c)
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y


@dataclasses.dataclass(frozen=True)
class Frame:
  """Patient coordinates of every pixel of one image.

  Attributes:
    resolution: image side ``R`` in pixels.
    scale: magnification ``s`` (image units per patient unit).
    angle: in-plane rotation ``theta`` in radians.
    shift: ``(x0, y0)`` translation in image units.
    u: patient lateral coordinate of each pixel, ``(R, R)``.
    v: patient cranio-caudal coordinate of each pixel, ``(R, R)``.
  """

  resolution: int
  scale: float
  angle: float
  shift: tuple[float, float]
  u: np.ndarray
  v: np.ndarray

  @classmethod
  def create(cls, resolution: int, *, scale: float, angle: float,
             shift: tuple[float, float]) -> Frame:
    """Inverts the similarity transform on the shared pixel grid."""
    x, y = pixel_grid(resolution)
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    dx, dy = x - np.float32(shift[0]), y - np.float32(shift[1])
    u = dx * np.float32(c) + dy * np.float32(s)
    v = dy * np.float32(c) - dx * np.float32(s)
    return cls(resolution, scale, angle, shift, u, v)

  @property
  def pixel(self) -> float:
    """Side of one pixel in patient units."""
    return 2.0 / (self.resolution * self.scale)

  def to_pixels(self, u: float, v: float) -> tuple[float, float]:
    """Fractional (row, column) pixel coordinates of a patient point."""
    c, s = math.cos(self.angle) * self.scale, math.sin(self.angle) * self.scale
    x = c * u - s * v + self.shift[0]
    y = s * u + c * v + self.shift[1]
    half = self.resolution / 2.0
    return (y + 1.0) * half - 0.5, (x + 1.0) * half - 0.5

  def window(self, u0: float, u1: float, v0: float, v1: float) -> Window:
    """Pixel slices covering the patient-frame box ``[u0, u1] x [v0, v1]`` (possibly empty)."""
    corners = [self.to_pixels(u, v) for u, v in ((u0, v0), (u1, v0), (u0, v1), (u1, v1))]
    rows, cols = [c[0] for c in corners], [c[1] for c in corners]
    r = self.resolution
    r0, r1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)) + 1, r)
    c0, c1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)) + 1, r)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))

  def local(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Views of ``(u, v)`` inside a pixel window."""
    return self.u[window], self.v[window]


def ramp(d: np.ndarray, width: float) -> np.ndarray:
  """Coverage ``clip(1/2 - d/width, 0, 1)`` of the region ``d < 0`` (a new float32 array)."""
  out = d * np.float32(-1.0 / width)
  out += np.float32(0.5)
  np.maximum(out, np.float32(0.0), out=out)
  return np.minimum(out, np.float32(1.0), out=out)


def ellipse_sdf(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float,
                rv: float) -> tuple[np.ndarray, np.ndarray]:
  """Approximate signed distance to an axis-aligned ellipse, and its normalised radius.

  ``rho = sqrt(((u-cu)/ru)^2 + ((v-cv)/rv)^2)``; the distance ``(rho - 1) sqrt(ru rv)`` is exact
  for circles and within the ratio of the radii elsewhere, which is all a ramp of a few pixels
  needs. ``rho`` doubles as a depth profile (``sqrt(1 - rho^2)`` is the chord of an ellipsoid).
  """
  a = (u - np.float32(cu)) * np.float32(1.0 / ru)
  b = (v - np.float32(cv)) * np.float32(1.0 / rv)
  a *= a
  b *= b
  a += b
  rho = np.sqrt(a, out=a)
  d = rho - np.float32(1.0)
  d *= np.float32(math.sqrt(ru * rv))
  return d, rho


def rotated(u: np.ndarray, v: np.ndarray, cu: float, cv: float,
            angle: float) -> tuple[np.ndarray, np.ndarray]:
  """Coordinates relative to ``(cu, cv)`` in axes rotated by ``angle`` (radians)."""
  c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
  du, dv = u - np.float32(cu), v - np.float32(cv)
  return du * c + dv * s, dv * c - du * s


def segment_distance(u: np.ndarray, v: np.ndarray, p: tuple[float, float],
                     q: tuple[float, float]) -> np.ndarray:
  """Euclidean distance to the segment ``[p, q]``."""
  eu, ev = q[0] - p[0], q[1] - p[1]
  inv = 1.0 / max(eu * eu + ev * ev, 1e-12)
  du, dv = u - np.float32(p[0]), v - np.float32(p[1])
  t = np.clip((du * np.float32(eu) + dv * np.float32(ev)) * np.float32(inv), 0.0, 1.0)
  du -= t * np.float32(eu)
  dv -= t * np.float32(ev)
  return np.sqrt(du * du + dv * dv)


def polyline_distance(u: np.ndarray, v: np.ndarray,
                      points: np.ndarray) -> np.ndarray:
  """Distance to a polyline through ``points`` (``(n, 2)`` patient coordinates)."""
  d = segment_distance(u, v, tuple(points[0]), tuple(points[1]))
  for p, q in zip(points[1:-1], points[2:]):
    np.minimum(d, segment_distance(u, v, tuple(p), tuple(q)), out=d)
  return d


def box_of(coverage: np.ndarray, window: Window, threshold: float,
           resolution: int) -> tuple[float, float, float, float] | None:
  """Normalised ``(ymin, xmin, ymax, xmax)`` of ``coverage > threshold`` inside ``window``.

  ``coverage`` is the map evaluated on ``window``; the box spans whole pixels, so it is exactly
  the extent of the thresholded finding in the image. Returns None when nothing passes.
  """
  hit = coverage > threshold
  rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
  if rows.size == 0:
    return None
  r0, c0 = window[0].start, window[1].start
  return ((r0 + rows[0]) / resolution, (c0 + cols[0]) / resolution,
          (r0 + rows[-1] + 1) / resolution, (c0 + cols[-1] + 1) / resolution)
