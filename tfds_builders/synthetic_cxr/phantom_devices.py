"""Distractors of the chest phantom: support devices and burned-in annotations.

Devices are radiopaque and drawn into the projected density: an endotracheal tube in the trachea,
a nasogastric tube down the oesophagus into the stomach, a central venous catheter from a
subclavian vein to the superior vena cava, and ECG electrodes with their leads. Burned-in text
(a laterality marker 'L' or 'R', 'PORTABLE' or the view name) is written into the final image.
Devices and text depend on the view (portable AP films carry most of them), never on findings.
"""

from __future__ import annotations

import numpy as np

from . import phantom_geometry as geo
from .phantom_anatomy import Params, dome_level
from .phantom_assets import text_bitmap

_TEXTS = ("", "PORTABLE")


def draw_devices(d: np.ndarray, frame: geo.Frame, p: Params, edge: float) -> None:
  """Adds the image's tubes, lines and electrodes to the density map ``d``."""
  tu, carina = p["trachea_u"], p["hilum_v"] - 0.16
  if p["ett"]:
    _line(d, frame, np.array([[tu, -1.5], [tu, carina - 0.14]]), 0.013, 0.10, edge)
    _line(d, frame, np.array([[tu - 0.008, -1.5], [tu - 0.008, carina - 0.14]]), 0.003, 0.25, edge)
  if p["ng_tube"]:
    dome = dome_level(p, 1)
    _line(d, frame, np.array([[tu + 0.03, -1.5], [0.035, p["knob_v"] + 0.1], [0.05, dome - 0.05],
                              [0.2, dome + 0.12], [0.33, dome + 0.08]]), 0.006, 0.25, edge)
  if p["cvc"]:
    s, c = p["cvc_side"], p["clav_v"]
    _line(d, frame, np.array([[s * 0.62, c + 0.01], [s * 0.3, c + 0.07], [-0.07, c + 0.16],
                              [-0.075, p["knob_v"] + 0.18]]), 0.005, 0.25, edge)
  if p["ecg"]:
    rng = np.random.default_rng(int(p["ecg_seed"]))
    for _ in range(int(rng.integers(2, 5))):
      side = rng.choice((-1.0, 1.0))
      eu, ev = side * rng.uniform(0.3, 0.85), rng.uniform(-0.7, 0.35)
      _electrode(d, frame, eu, ev, edge)
      end = side * 1.4
      mid = (eu + 0.5 * (end - eu), ev + rng.uniform(-0.25, 0.25))
      _line(d, frame, np.array([[eu, ev], mid, [end, ev + rng.uniform(-0.4, 0.4)]]), 0.003,
            0.18, edge)


def _line(d: np.ndarray, frame: geo.Frame, points: np.ndarray, half_width: float,
          density: float, edge: float) -> None:
  """A tube of ``half_width`` along a polyline; thinner than a pixel, it keeps its total density."""
  reach = half_width + 2 * edge
  win = frame.window(points[:, 0].min() - reach, points[:, 0].max() + reach,
                     points[:, 1].min() - reach, points[:, 1].max() + reach)
  u, v = frame.local(win)
  if u.size == 0:
    return
  dist = geo.polyline_distance(u, v, points)
  width = max(half_width, 0.5 * frame.pixel)
  d[win] += np.float32(density * half_width / width) * geo.ramp(dist - np.float32(width),
                                                                 frame.pixel)


def _electrode(d: np.ndarray, frame: geo.Frame, eu: float, ev: float, edge: float) -> None:
  win = frame.window(eu - 0.05, eu + 0.05, ev - 0.05, ev + 0.05)
  u, v = frame.local(win)
  dist = np.sqrt((u - np.float32(eu)) ** 2 + (v - np.float32(ev)) ** 2)
  ring = geo.ramp(np.abs(dist - np.float32(0.028)) - np.float32(0.004), frame.pixel)
  dot = geo.ramp(dist - np.float32(0.009), frame.pixel)
  d[win] += np.float32(0.12) * ring + np.float32(0.3) * dot


def burn_text(image: np.ndarray, p: Params) -> None:
  """Writes the laterality marker and the annotation text into ``image`` (values in [0, 1])."""
  r = image.shape[0]
  margin = max(1, round(0.03 * r))
  corner = int(p["marker_corner"])
  if p["marker"]:
    _paste(image, text_bitmap("L" if p["marker"] == 1 else "R", max(3, round(0.06 * r))),
           margin, corner, margin)
  if p["text"]:
    text = _TEXTS[1] if p["text"] == 1 else ("AP" if p["view"] == 1 else "PA")
    _paste(image, text_bitmap(text, max(3, round(0.045 * r))), margin, 1 - corner, margin)


def _paste(image: np.ndarray, bitmap: np.ndarray, top: int, corner: int, margin: int) -> None:
  r = image.shape[0]
  h, w = min(bitmap.shape[0], r - top), min(bitmap.shape[1], r - 2 * margin)
  left = margin if corner == 0 else r - margin - w
  region = image[top:top + h, left:left + w]
  np.maximum(region, np.float32(0.97) * bitmap[:h, :w], out=region)
