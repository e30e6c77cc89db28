"""Findings of the chest phantom, drawn into the anatomy of :mod:`phantom_anatomy`.

Each finding mimics the radiographic sign a reader looks for, at low contrast:

* cardiomegaly: a heart wider than half the thorax (CTR 0.52-0.60 against 0.40-0.50 when
  normal; drawn by the anatomy, magnified by a tenth more on AP views as in real films);
* effusion: fluid in the dependent pleural space, displacing lung air below a meniscus that rises
  laterally: a blunted costophrenic angle (small) up to a basal opacity hiding the dome (large);
* pneumothorax: the lung edge (visceral pleural line) pulled away from the apex and the lateral
  chest wall, with a lucent rim without lung markings between them; its mask is that rim;
* nodule: a small round opacity (radius 0.03-0.045 image half-widths); mass: a larger lobulated
  one (0.075-0.12);
* consolidation: patchy airspace opacity within one lobe, bounded by the fissure;
* atelectasis: a plate-like band opacity above the dome and volume loss (raised hemidiaphragm);
* edema: bilateral perihilar haze, indistinct enlarged vessels and Kerley B lines (short
  horizontal lines at the lateral lung bases).

Focal findings (atelectasis, effusion, mass, nodule, consolidation) get a box: the pixel extent of
their coverage above 0.3, in normalised ``(ymin, xmin, ymax, xmax)``. Contrasts are set so that a
linear model on 16x16 pixels stays well below a perfect score (see the dataset's README figures)
while each sign remains visible at 64x64.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import phantom_geometry as geo
from .phantom_anatomy import Lung, Params, Thorax
from .phantom_assets import Assets
from .phantom_cohort import CLASS_NAMES

_CLS = {name: i for i, name in enumerate(CLASS_NAMES)}
_BOX_THRESHOLD = 0.3  # share of a finding's peak coverage that its box encloses


@dataclasses.dataclass
class Annotations:
  """Boxes (with class ids) and the pneumothorax mask of one image."""

  resolution: int
  boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)
  box_labels: list[int] = dataclasses.field(default_factory=list)
  mask: np.ndarray | None = None

  def add_box(self, name: str, coverage: np.ndarray, window: geo.Window,
              extent: np.ndarray | None = None) -> None:
    """Boxes ``coverage > 0.3`` on ``window``; where nothing passes (a finding hidden behind the
    heart, say), the finding's geometric ``extent`` instead, so every focal label has a box."""
    box = geo.box_of(coverage, window, _BOX_THRESHOLD, self.resolution)
    if box is None and extent is not None:
      box = geo.box_of(extent, window, _BOX_THRESHOLD, self.resolution)
    if box is not None:
      self.boxes.append(box)
      self.box_labels.append(_CLS[name])


def dome_raise(p: Params) -> tuple[float, float]:
  """Elevation of the (right, left) hemidiaphragm from volume loss (atelectasis)."""
  if not p["atelectasis"]:
    return 0.0, 0.0
  r = p["atelectasis_raise"]
  return (r, 0.0) if p["atelectasis_side"] < 0 else (0.0, r)


def vessel_gain(p: Params) -> float:
  """Prominence of vascular markings: engorged, indistinct vessels in edema."""
  return 1.0 + 0.35 * p["edema_severity"] if p["edema"] else 1.0


def pleural(frame: geo.Frame, p: Params, th: Thorax,
            ann: Annotations) -> list[tuple[geo.Window, np.ndarray]]:
  """Pneumothorax and effusion: edit the lungs' air and tissue maps in place, and set the mask.

  Returns density to add after the anatomy (the pneumothorax's pleural line and lucent rim), as
  (window, map) pairs.
  """
  extra = []
  ann.mask = np.zeros((frame.resolution, frame.resolution), np.uint8)
  if p["pneumothorax"]:
    lung = th.lungs[0 if p["pneumothorax_side"] < 0 else 1]
    extra.append((lung.window, _pneumothorax(frame, p, lung, th.edge, ann)))
  if p["effusion"]:
    sides = {0: (0,), 1: (1,), 2: (0, 1)}[int(p["effusion_sides"])]
    for i in sides:
      _effusion(p, th.lungs[i], th.edge, ann)
  return extra


def _pneumothorax(frame: geo.Frame, p: Params, lung: Lung, edge: float,
                  ann: Annotations) -> np.ndarray:
  """Shrinks the costal ellipse by ``depth`` laterally and ``0.8 depth`` at the apex.

  The collapsed lung keeps its medial and basal borders (``ct - a`` and ``cv + b`` fixed); the rim
  between the costal border and the visceral pleura holds air without lung markings.
  """
  depth = p["pneumothorax_depth"]
  ct, cv, a, b, _ = lung.ellipse
  shrunk = lung.costal_sdf(ct - depth / 2, cv + 0.4 * depth, a - depth / 2, b - 0.4 * depth)
  visceral = np.maximum(shrunk, lung.diaphragm)
  tissue = lung.aerated(visceral, edge)
  rim = np.clip(lung.air - tissue, 0.0, 1.0)
  lung.tissue = np.minimum(lung.tissue, tissue)
  ann.mask[lung.window] = rim > 0.5
  line = geo.ramp(np.abs(visceral) - np.float32(0.25 * frame.pixel), 0.8 * frame.pixel)
  line *= lung.air
  out = np.float32(0.14) * line
  out -= np.float32(0.08) * rim
  out += np.float32(0.04) * tissue
  return out


def _effusion(p: Params, lung: Lung, edge: float, ann: Annotations) -> None:
  """Pleural fluid below a meniscus ``v = v_cp - h - 0.08 s^2`` (``s`` from medial to lateral).

  ``v_cp`` is the level of the costophrenic angle and ``h = 0.02 + 0.2 level^2`` grows from a
  blunted angle (most effusions) to a basal opacity hiding the dome. The fluid displaces the lung's
  air and markings; its box is where it overlies the lung.
  """
  ct, _, a, _, _ = lung.ellipse
  lateral = ct + a
  v_cp = lung.dome + p["dome_curv"] * (lateral - p["dome_t"]) ** 2
  h = 0.02 + 0.2 * p["effusion_level"] ** 2
  s = np.clip((lung.t - np.float32(0.1)) * np.float32(1.0 / (lateral - 0.1)), 0.0, 1.2)
  meniscus = np.float32(v_cp - h) - np.float32(0.08) * s * s
  fluid = geo.ramp(meniscus - lung.v, 0.035)
  fluid *= geo.ramp(np.maximum(lung.cage, lung.diaphragm - np.float32(0.12)), edge)
  fluid *= 1.0 - lung.outside
  visible = fluid * lung.air
  lung.air = lung.air * (1.0 - fluid)
  lung.tissue = lung.tissue * (1.0 - fluid)
  ann.add_box("effusion", visible, lung.window, extent=fluid)


def parenchymal(d: np.ndarray, frame: geo.Frame, p: Params, th: Thorax, assets: Assets,
                ann: Annotations) -> None:
  """Adds nodule, mass, consolidation, atelectasis and edema opacities to ``d``."""
  if p["nodule"]:
    _round_opacity(d, frame, p, "nodule", th.edge, ann)
  if p["mass"]:
    _round_opacity(d, frame, p, "mass", th.edge, ann)
  if p["consolidation"]:
    _consolidation(d, frame, p, th, assets, ann)
  if p["atelectasis"]:
    _atelectasis(d, frame, p, th, ann)
  if p["edema"]:
    for lung in th.lungs:
      _edema(d, frame, p, lung)


def _round_opacity(d: np.ndarray, frame: geo.Frame, p: Params, name: str, edge: float,
                   ann: Annotations) -> None:
  """A ball (chord profile) of radius ``r``; masses have lobulated outlines
  ``r (1 + l cos(3 phi + phase) + l/2 cos(5 phi + 2 phase))``."""
  r, side = p[f"{name}_r"], p[f"{name}_side"]
  cu, cv = side * p[f"{name}_t"], p[f"{name}_v"]
  reach = 1.3 * r + 2 * edge
  win = frame.window(cu - reach, cu + reach, cv - reach, cv + reach)
  u, v = frame.local(win)
  du, dv = u - np.float32(cu), v - np.float32(cv)
  dist = np.sqrt(du * du + dv * dv)
  radius = np.float32(r)
  if name == "mass":
    phi, lob, ph = np.arctan2(dv, du), p["mass_lobulation"], p["mass_phase"]
    radius = np.float32(r) * (np.float32(1.0) + np.float32(lob) * np.cos(
        np.float32(3.0) * phi + np.float32(ph)) + np.float32(lob / 2) * np.cos(
            np.float32(5.0) * phi + np.float32(2 * ph)))
  x = dist / radius
  cover = geo.ramp(dist - radius, max(edge, 0.25 * r))
  chord = np.sqrt(np.clip(np.float32(1.0) - x * x, 0.0, 1.0))
  opacity = cover * (np.float32(0.45) + np.float32(0.55) * chord)
  d[win] += np.float32(p[f"{name}_density"]) * opacity
  ann.add_box(name, opacity, win)


def _consolidation(d: np.ndarray, frame: geo.Frame, p: Params, th: Thorax, assets: Assets,
                   ann: Annotations) -> None:
  """Patchy opacity filling part of the upper or lower lobe, sharp at the fissure."""
  lung = th.lungs[0 if p["consolidation_side"] < 0 else 1]
  ct, cv, a, b, _ = lung.ellipse
  fissure = np.float32(p["hilum_v"] + 0.04) + np.float32(0.18) * (lung.t - np.float32(0.2))
  upper = p["consolidation_lobe"] == 0
  side_of_fissure = (lung.v - fissure) if upper else (fissure + np.float32(0.04) - lung.v)
  centre_v = (p["apex"] + p["hilum_v"]) / 2 if upper else (p["hilum_v"] + lung.dome) / 2 + 0.05
  blob, _ = geo.ellipse_sdf(lung.t, lung.v, ct + 0.35 * a, centre_v, 0.7 * a, 0.32 * b)
  zone = geo.ramp(side_of_fissure, th.edge) * geo.ramp(blob, 0.12)
  field = int(p["texture_field"]) % assets.noise.shape[1]
  r0 = int(p["texture_row"] * frame.resolution)
  c0 = int(p["texture_col"] * frame.resolution)
  patch = assets.noise_view(1, field, r0, c0)[lung.window]
  patch = np.clip(np.float32(0.65) + np.float32(0.45) * patch, 0.0, 1.0)
  extent = zone * patch
  opacity = extent * lung.tissue
  d[lung.window] += np.float32(p["consolidation_density"]) * opacity
  ann.add_box("consolidation", opacity, lung.window, extent=extent)


def _atelectasis(d: np.ndarray, frame: geo.Frame, p: Params, th: Thorax,
                 ann: Annotations) -> None:
  """Plate-like (discoid) atelectasis: a thin band above the raised dome of the same side, in the
  lateral part of the lung (its box is the band's extent, seen or partly hidden)."""
  lung = th.lungs[0 if p["atelectasis_side"] < 0 else 1]
  ct, _, a, _, _ = lung.ellipse
  tc, vc = ct + a * p["atelectasis_t"], lung.dome - p["atelectasis_dv"]
  half_len, half_th = p["atelectasis_len"] / 2, p["atelectasis_th"] / 2
  ta, va = geo.rotated(lung.t, lung.v, tc, vc, p["atelectasis_angle"])
  sdf, _ = geo.ellipse_sdf(ta, va, 0.0, 0.0, half_len, max(half_th, 0.6 * frame.pixel))
  band = geo.ramp(sdf, th.edge)
  d[lung.window] += np.float32(0.28) * band * lung.tissue
  ann.add_box("atelectasis", band, lung.window)


def _edema(d: np.ndarray, frame: geo.Frame, p: Params, lung: Lung) -> None:
  """Perihilar ("bat-wing") haze and Kerley B lines along the lateral bases."""
  sev = p["edema_severity"]
  x = (lung.t - np.float32(p["hilum_t"] + 0.05)) * np.float32(1.0 / 0.3)
  y = (lung.v - np.float32(p["hilum_v"])) * np.float32(1.0 / 0.38)
  haze = np.exp(-(x * x + y * y))
  spacing = max(0.05, 5.0 * frame.pixel)
  q = lung.v * np.float32(1.0 / spacing)
  q -= np.floor(q)
  lines = geo.ramp((np.abs(q - np.float32(0.5)) * np.float32(spacing)) - np.float32(
      0.3 * frame.pixel), frame.pixel)
  lines *= geo.ramp(np.maximum(np.float32(-0.07) - lung.cage,
                               np.float32(lung.dome - 0.35) - lung.v), 2.0 * frame.pixel)
  out = np.float32(0.05 * sev) * haze + np.float32(0.07 * sev) * lines
  out *= lung.tissue
  d[lung.window] += out
