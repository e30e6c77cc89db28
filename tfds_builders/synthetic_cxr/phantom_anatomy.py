"""Normal anatomy of the chest phantom: organ outlines and their projected density.

A frontal radiograph records ``exp(-integral of attenuation)`` along rays; the phantom works
directly with the projected density ``D`` (attenuation integrated through the patient, arbitrary
units, soft tissue of a slim adult ~1) and leaves exposure to the renderer. Each structure adds its
density times a coverage map; the air in the lungs subtracts. Depth profiles are chords of
ellipsoids, ``sqrt(1 - rho^2)``, so the body darkens towards its edges and the lungs are most
lucent where they are thickest.

Outlines, in lung-local coordinates ``t = side * u`` (``side`` -1 for the patient's right, +1 for
the left, so ``t`` grows laterally on both sides):

* costal border: an egg-shaped curve ``|x|^3 + y^2 = 1``, ``y = (v - lung_cv)/b``,
  ``x = (t - lung_ct)/(a (1 + egg y))``: flat lateral walls reaching the thoracic half-width, a
  rounded apex, narrower above;
* diaphragm: a parabolic dome ``v = dome + dome_curv (t - dome_t)^2`` (the left lower by
  ``dome_gap``), so the costophrenic angle is sharp where it meets the costal border;
* heart: an ellipse tilted towards the left, sized by the cardiothoracic ratio (CTR, the heart's
  width over the thoracic width), magnified on AP views; heart and mediastinum hide most of the
  lung air in front of and behind them, so they show as dense as the abdomen below;
* mediastinum: a vertical band with the aortic knob on the left; the lungs are what the costal
  ellipse holds above the diaphragm and outside heart and mediastinum.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from . import phantom_geometry as geo
from .phantom_assets import Assets

AP_HEART_MAGNIFICATION = 1.10
AP_CLAVICLE_RISE = 0.10
_NUM_RIBS = 10
# Projected densities (soft tissue of a slim adult ~ 1).
_SOFT, _AIR, _HIDDEN = 1.0, 0.68, 0.85  # _HIDDEN: share of lung air that heart & mediastinum hide
_SPINE, _RIB, _ANTERIOR_RIB, _CLAVICLE, _SCAPULA, _HUMERUS = 0.10, 0.10, 0.05, 0.16, 0.05, 0.22
_HILUM, _VESSEL, _TRACHEA, _BUBBLE, _BREAST = 0.08, 0.075, 0.28, 0.25, 0.10

Params = Mapping[str, float]


@dataclasses.dataclass
class Lung:
  """One lung's outline maps, on a pixel window of the image.

  Attributes:
    side: -1 for the patient's right (image left), +1 for the left.
    window: pixel window holding the hemithorax.
    t, v: lung-local coordinates of the window's pixels.
    ellipse: ``(ct, cv, a, b, egg)`` of the costal border.
    dome: level of the diaphragm dome (after inspiration and volume loss).
    cage: signed distance to the costal border.
    rho: normalised radius in the costal ellipse (depth profile).
    diaphragm: signed distance to the diaphragm (positive below it).
    outside: coverage of heart and mediastinum on the window (they hide the lung).
    air: coverage of the aerated pleural space.
    tissue: coverage of aerated lung parenchyma (where lung markings show).
  """

  side: int
  window: geo.Window
  t: np.ndarray
  v: np.ndarray
  ellipse: tuple[float, float, float, float, float]
  dome: float
  cage: np.ndarray
  rho: np.ndarray
  diaphragm: np.ndarray
  outside: np.ndarray
  air: np.ndarray
  tissue: np.ndarray

  def costal_sdf(self, ct: float, cv: float, a: float, b: float) -> np.ndarray:
    """Signed distance to an egg-shaped ellipse with this lung's ``egg`` factor."""
    return costal_sdf(self.t, self.v, ct, cv, a, b, self.ellipse[4])

  def aerated(self, sdf: np.ndarray, edge: float) -> np.ndarray:
    """Coverage of aerated lung inside ``sdf < 0`` (see :func:`aerated`)."""
    return aerated(self.t, sdf, self.outside, edge)


def aerated(t: np.ndarray, sdf: np.ndarray, outside: np.ndarray, edge: float) -> np.ndarray:
  """Coverage of aerated lung inside ``sdf < 0``, lateral to the midline (``t > 0.02``), where
  heart and mediastinum (coverage ``outside``) leave ``1 - _HIDDEN`` of the air."""
  cover = geo.ramp(np.maximum(sdf, np.float32(0.02) - t), edge)
  cover *= np.float32(1.0) - np.float32(_HIDDEN) * outside
  return cover


def costal_sdf(t: np.ndarray, v: np.ndarray, ct: float, cv: float, a: float, b: float,
               egg: float) -> np.ndarray:
  """Approximate signed distance to the egg-shaped costal outline.

  ``y = (v - cv)/b``, ``x = (t - ct)/(a (1 + egg y))``, ``rho = sqrt(|x|^3 + y^2)`` (flatter
  lateral walls than an ellipse, a rounded apex), distance ``(rho - 1) sqrt(a b)``.
  """
  y = (v - np.float32(cv)) * np.float32(1.0 / b)
  x = (t - np.float32(ct)) / (np.float32(a) + np.float32(a * egg) * y)
  x = np.abs(x) * x * x
  x += y * y
  rho = np.sqrt(x, out=x)
  rho -= np.float32(1.0)
  rho *= np.float32(math.sqrt(a * b))
  return rho


@dataclasses.dataclass
class Thorax:
  """Outline maps shared by anatomy and findings for one image."""

  edge: float
  heart: np.ndarray
  mediastinum: np.ndarray
  lungs: tuple[Lung, Lung]
  heart_box: tuple[float, float, float, float]  # (u0, u1, v0, v1) of the cardiac silhouette


def dome_level(p: Params, side: int, raise_: float = 0.0) -> float:
  """Dome level of one hemidiaphragm for an image (inspiration and volume loss included)."""
  return p["dome"] + (p["dome_gap"] if side > 0 else 0.0) + p["inspiration"] - raise_


def thorax(frame: geo.Frame, p: Params, *, dome_raise: tuple[float, float] = (0.0, 0.0)) -> Thorax:
  """Heart, mediastinum and both lungs' outline maps.

  Args:
    frame: patient coordinates of the image.
    p: image parameters (see :mod:`phantom_cohort`).
    dome_raise: elevation of the (right, left) hemidiaphragm, e.g. from volume loss.
  """
  edge = max(1.2 * frame.pixel, 0.012)
  ap = p["view"] == 1
  heart, heart_box = _heart(frame, p, edge, AP_HEART_MAGNIFICATION if ap else 1.0)
  mediastinum = _mediastinum(frame, p, edge, heart_box[2] + 0.5 * (heart_box[3] - heart_box[2]),
                             1.08 if ap else 1.0)
  hidden = np.maximum(heart, mediastinum)
  lungs = tuple(_lung(frame, p, side, edge, hidden, raise_)
                for side, raise_ in zip((-1, 1), dome_raise))
  return Thorax(edge, heart, mediastinum, lungs, heart_box)


def _heart(frame: geo.Frame, p: Params, edge: float,
           magnification: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
  """Cardiac silhouette of horizontal half-width ``CTR * thorax_hw`` (times the AP magnification).

  An ellipse tilted by ``heart_tilt``; its short axis keeps the size of the patient's normal heart,
  so an enlarged heart grows along the long axis (down and to the left). It rests on the right
  dome, and below its centre it continues down as a band of 85% of its width, so that no lung
  shows under the heart. Returns the coverage and the ``(u0, u1, v0, v1)`` extent.
  """
  half_width = p["ctr"] * p["thorax_hw"] * magnification
  tilt, k = p["heart_tilt"], p["heart_aspect"]
  c, s = math.cos(tilt), math.sin(tilt)
  normal = p["ctr_normal"] * p["thorax_hw"] * magnification / math.sqrt(c * c + (k * s) ** 2)
  ry = k * normal
  rx = math.sqrt(max(half_width ** 2 - (ry * s) ** 2, (0.5 * half_width) ** 2)) / c
  half_height = math.sqrt((rx * s) ** 2 + (ry * c) ** 2)
  cu = half_width * (1.0 - 2.0 * p["heart_shift"])
  cv = dome_level(p, -1) + 0.06 - 0.6 * half_height
  a, b = geo.rotated(frame.u, frame.v, cu, cv, tilt)
  d, _ = geo.ellipse_sdf(a, b, 0.0, 0.0, rx, ry)
  base = np.maximum(np.abs(frame.u - np.float32(cu)) - np.float32(0.85 * half_width),
                    np.float32(cv) - frame.v)
  np.minimum(d, base, out=d)
  return geo.ramp(d, 2.0 * edge), (cu - half_width, cu + half_width, cv - half_height,
                                   cv + half_height)


def _mediastinum(frame: geo.Frame, p: Params, edge: float, bottom: float,
                 magnification: float) -> np.ndarray:
  """Upper mediastinum (a band down to the heart's middle) and the aortic knob."""
  hw = p["med_hw"] * magnification
  d = np.maximum(np.abs(frame.u) - np.float32(hw), frame.v - np.float32(bottom))
  band = geo.ramp(d, 2.0 * edge)
  r = p["knob_r"] * magnification
  win = frame.window(hw - r, hw + 1.5 * r, p["knob_v"] - r * 1.6, p["knob_v"] + r * 1.6)
  u, v = frame.local(win)
  knob, _ = geo.ellipse_sdf(u, v, hw + 0.1 * r, p["knob_v"], r, 1.3 * r)
  np.maximum(band[win], geo.ramp(knob, edge), out=band[win])
  return band


def _lung(frame: geo.Frame, p: Params, side: int, edge: float, hidden: np.ndarray,
          raise_: float) -> Lung:
  """One lung's outline maps on the window of its hemithorax."""
  hw = p["thorax_hw"] * (1.0 + p["asym"] * side)
  ct, cv, egg = p["lung_ct"], p["lung_cv"], p["egg"]
  a, b = hw - ct, cv - p["apex"]
  u0, u1 = sorted((side * -0.2, side * (hw + 0.2)))
  window = frame.window(u0, u1, p["apex"] - 0.25, 1.6)
  u, v = frame.local(window)
  t = u * np.float32(side)
  dome = dome_level(p, side, raise_)
  cage = costal_sdf(t, v, ct, cv, a, b, egg)
  rho = cage * np.float32(1.0 / math.sqrt(a * b)) + np.float32(1.0)
  curv, dt = p["dome_curv"], t - np.float32(p["dome_t"])
  slope = dt * np.float32(2.0 * curv)
  diaphragm = v - np.float32(dome) - np.float32(curv) * dt * dt
  diaphragm /= np.sqrt(slope * slope + np.float32(1.0))
  outside = hidden[window]
  air = aerated(t, np.maximum(cage, diaphragm), outside, edge)
  return Lung(side, window, t, v, (ct, cv, a, b, egg), dome, cage, rho, diaphragm, outside, air,
              air.copy())


def density(frame: geo.Frame, p: Params, th: Thorax, assets: Assets,
            vessel_gain: float = 1.0) -> np.ndarray:
  """Projected density of the normal anatomy (lungs as currently held in ``th``)."""
  edge = th.edge
  d = _body(frame, p, edge)
  _spine(d, frame, p, edge)
  for lung in th.lungs:
    _ribs(d, lung, p, edge)
    _lung_density(d, frame, p, lung, assets, vessel_gain)
  _clavicles(d, frame, p, edge)
  _shoulders(d, frame, p, edge)
  _airways(d, frame, p, edge)
  if p["bubble"]:
    _gastric_bubble(d, frame, p, edge)
  if p["female"]:
    _breasts(d, frame, p, edge)
  return d


def _body(frame: geo.Frame, p: Params, edge: float) -> np.ndarray:
  """Soft tissue with a chord profile across a body of half-width ``W(v)``: the neck, shoulders
  sloping down to the upper arms (widest at the shoulder level) and the torso below; thinner
  parts (the neck) are also thinner front to back."""
  shoulder = p["clav_v"] + 0.05
  neck, torso = p["neck_hw"], p["thorax_hw"] + p["chest_wall"]
  s = np.clip((np.float32(shoulder) - frame.v) * np.float32(1.0 / 0.5), 0.0, 1.0)
  s *= s
  width = np.sqrt(np.float32(1.0) - s)
  width *= np.float32(torso + 0.1 - neck)
  width += np.float32(neck)
  below = np.clip((frame.v - np.float32(shoulder)) * np.float32(1.0 / 0.4), 0.0, 1.0)
  width -= np.float32(0.1) * below
  x = frame.u / width
  x *= x
  cover = geo.ramp(np.abs(frame.u) - width, edge)
  chord = np.sqrt(np.clip(np.float32(1.0) - x, 0.0, 1.0, out=x), out=x)
  chord *= np.float32(0.8)
  chord += np.float32(0.2) * cover
  thickness = width * np.float32(0.45 / torso)
  thickness += np.float32(0.55)
  chord *= np.minimum(thickness, np.float32(1.0))
  chord *= np.float32(_SOFT * (0.9 + 0.2 * p["habitus"]))
  return chord


def _spine(d: np.ndarray, frame: geo.Frame, p: Params, edge: float) -> None:
  """Vertebral column: bodies separated by discs, pedicles and spinous processes."""
  hw, pitch = p["spine_hw"], p["vert_pitch"]
  win = frame.window(-hw - 0.02, hw + 0.02, -2.0, 2.0)
  u, v = frame.local(win)
  au = np.abs(u)
  q = v * np.float32(1.0 / pitch) + np.float32(p["vert_phase"])
  q -= np.floor(q)
  column = geo.ramp(au - np.float32(hw), edge)
  disc = geo.ramp((np.abs(q - np.float32(0.08)) - np.float32(0.08)) * np.float32(pitch), edge)
  column *= np.float32(1.0) - np.float32(0.45) * disc
  ped, _ = geo.ellipse_sdf(au, q * np.float32(pitch), 0.62 * hw, 0.5 * pitch, 0.28 * hw,
                           0.25 * pitch)
  column += np.float32(0.35) * geo.ramp(np.abs(ped) - np.float32(0.25 * edge), edge)
  d[win] += np.float32(_SPINE) * column


def _ribs(d: np.ndarray, lung: Lung, p: Params, edge: float) -> None:
  """Posterior ribs as bands of a warped periodic coordinate, plus faint anterior ribs.

  Rib ``k`` follows ``v = v_k - rise t + curv t^2`` (rising laterally, then falling); with
  ``q = v + rise t - curv t^2`` and ``z = (q - rib_top)/rib_len``, rib index ``k = 10 z^gamma``
  (``gamma < 1`` spreads the lower ribs), and a rib occupies the first ``rib_width`` of each
  period. One pass over the hemithorax draws all ribs.
  """
  t, v = lung.t, lung.v
  q = v + np.float32(p["rib_rise"]) * t - np.float32(p["rib_curv"]) * t * t
  z = np.clip((q - np.float32(p["rib_top"])) * np.float32(1.0 / p["rib_len"]), 0.0, None)
  k = np.power(z, np.float32(p["rib_gamma"]))
  k *= np.float32(_NUM_RIBS)
  phase = k - np.floor(k)
  width, period = p["rib_width"], p["rib_len"] / _NUM_RIBS
  band = geo.ramp((np.abs(phase - np.float32(width / 2)) - np.float32(width / 2))
                  * np.float32(period), edge)
  band *= geo.ramp(np.maximum(lung.cage - np.float32(0.04),
                              np.float32(p["spine_hw"] + 0.01) - t), 2.0 * edge)
  band *= k < _NUM_RIBS + 1
  band *= np.float32(0.15) + np.float32(0.85) * lung.air
  qa = v + np.float32(0.6) * t
  qa *= np.float32(1.0 / (1.15 * period))
  qa -= np.floor(qa)
  anterior = geo.ramp((np.abs(qa - np.float32(0.2)) - np.float32(0.18))
                      * np.float32(1.15 * period), 1.5 * edge)
  anterior *= geo.ramp(np.maximum(np.maximum(lung.cage, lung.diaphragm), np.float32(0.3) - t),
                       6.0 * edge)
  band *= np.float32(_RIB)
  band += np.float32(_ANTERIOR_RIB) * anterior
  d[lung.window] += band


def _lung_density(d: np.ndarray, frame: geo.Frame, p: Params, lung: Lung, assets: Assets,
                  vessel_gain: float) -> None:
  """Air (depth-weighted), vascular markings from the hilum, hilar shadow and texture."""
  depth = np.clip(np.float32(1.0) - lung.rho * lung.rho, 0.0, 1.0)
  np.sqrt(depth, out=depth)
  depth *= np.float32(0.3)
  depth += np.float32(0.7)
  out = -np.float32(_AIR) * lung.air * depth
  hilum_u, hilum_v = lung.side * p["hilum_t"], p["hilum_v"]
  row, col = frame.to_pixels(hilum_u, hilum_v)
  key = "vessel_tree_l" if lung.side > 0 else "vessel_tree_r"
  tree = int(p[key]) % assets.vessels.shape[0]
  vessels = assets.vessel_view(tree, float(row), float(col))[lung.window]
  r = frame.resolution
  texture = assets.noise_view(0, int(p["texture_field"]) % assets.noise.shape[1],
                              int(p["texture_row"] * r), int(p["texture_col"] * r))[lung.window]
  marks = vessels * np.float32(_VESSEL * p["vessel_gain"] * vessel_gain)
  marks += np.float32(0.012) * texture
  marks *= lung.tissue
  out += marks
  hil, hrho = geo.ellipse_sdf(lung.t, lung.v, p["hilum_t"], hilum_v, 0.055, 0.10)
  out += np.float32(_HILUM) * geo.ramp(hil, 3.0 * frame.pixel) * np.sqrt(
      np.clip(np.float32(1.0) - hrho * hrho, 0.0, 1.0))
  d[lung.window] += out


def _clavicles(d: np.ndarray, frame: geo.Frame, p: Params, edge: float) -> None:
  """S-shaped clavicles; on AP views projected higher and more horizontal."""
  ap = p["view"] == 1
  level = p["clav_v"] - (AP_CLAVICLE_RISE if ap else 0.0)
  rise = p["clav_rise"] * (0.3 if ap else 1.0)
  t0, t1, th = 0.07, 0.78, p["clav_th"]
  for side in (-1, 1):
    u0, u1 = sorted((side * 0.0, side * 0.85))
    win = frame.window(u0, u1, level - rise - 0.12, level + 0.12)
    u, v = frame.local(win)
    t = u * np.float32(side)
    s = (t - np.float32(t0)) * np.float32(1.0 / (t1 - t0))
    curve = np.float32(level) - np.float32(rise) * s + np.float32(0.02) * np.sin(
        s * np.float32(2 * math.pi))
    slope = np.float32(-rise / (t1 - t0)) + np.float32(0.02 * 2 * math.pi / (t1 - t0)) * np.cos(
        s * np.float32(2 * math.pi))
    dist = np.abs(v - curve) / np.sqrt(np.float32(1.0) + slope * slope) - np.float32(th / 2)
    dist = np.maximum(dist, np.maximum(np.float32(t0) - t, t - np.float32(t1)))
    d[win] += np.float32(_CLAVICLE) * geo.ramp(dist, edge)


def _shoulders(d: np.ndarray, frame: geo.Frame, p: Params, edge: float) -> None:
  """Scapulae (over the lateral lungs on AP views, rotated out on PA) and humeral heads."""
  ap = p["view"] == 1
  lateral = p["thorax_hw"] + (-0.12 if ap else 0.06)
  for side in (-1, 1):
    u0, u1 = sorted((side * (lateral - 0.1), side * 1.3))
    win = frame.window(u0, u1, -1.0, 0.15)
    u, v = frame.local(win)
    t = u * np.float32(side)
    border = np.float32(lateral) - np.float32(0.1) * (v + np.float32(0.7))
    blade = np.maximum(border - t, np.maximum(v - np.float32(0.05), np.float32(-0.72) - v))
    d[win] += np.float32(_SCAPULA) * geo.ramp(blade, 3.0 * edge)
    head = p["thorax_hw"] + p["chest_wall"] - 0.02
    hd, hrho = geo.ellipse_sdf(t, v, head, p["clav_v"] - 0.12, 0.13, 0.13)
    d[win] += np.float32(_HUMERUS) * geo.ramp(hd, edge) * (
        np.float32(0.5) + np.float32(0.5) * np.sqrt(np.clip(np.float32(1.0) - hrho * hrho, 0, 1)))


def _airways(d: np.ndarray, frame: geo.Frame, p: Params, edge: float) -> None:
  """Tracheal air column down to the carina and the two main bronchi."""
  tu, carina = p["trachea_u"], p["hilum_v"] - 0.16
  win = frame.window(-0.2, 0.2, -1.6, p["hilum_v"] + 0.05)
  u, v = frame.local(win)
  dist = np.maximum(np.abs(u - np.float32(tu)) - np.float32(0.045), v - np.float32(carina))
  air = geo.ramp(dist, 1.5 * edge)
  for side in (-1, 1):
    bronchus = geo.segment_distance(u, v, (tu, carina),
                                    (side * p["hilum_t"] * 0.85, p["hilum_v"] - 0.03))
    np.maximum(air, geo.ramp(bronchus - np.float32(0.028), 1.5 * edge), out=air)
  d[win] -= np.float32(_TRACHEA) * air


def _gastric_bubble(d: np.ndarray, frame: geo.Frame, p: Params, edge: float) -> None:
  """Gas in the gastric fundus under the left dome, flat-bottomed (air-fluid level)."""
  r = p["bubble_r"]
  tc = p["dome_t"] - 0.05
  vc = dome_level(p, 1) + 0.05 + r
  win = frame.window(tc - 1.6 * r, tc + 1.6 * r, vc - 1.2 * r, vc + 1.2 * r)
  u, v = frame.local(win)
  sdf, _ = geo.ellipse_sdf(u, v, tc, vc, 1.5 * r, r)
  d[win] -= np.float32(_BUBBLE) * geo.ramp(np.maximum(sdf, v - np.float32(vc + 0.3 * r)), edge)


def _breasts(d: np.ndarray, frame: geo.Frame, p: Params, edge: float) -> None:
  """Breast shadows over the lower zones, with a sharp inferior margin."""
  size = p["breast_size"]
  for side in (-1, 1):
    tc, vc = 0.48, dome_level(p, side) - 0.02
    ru, rv = 0.34 * size + 0.05, 0.22 * size + 0.04
    u0, u1 = sorted((side * (tc - ru), side * (tc + ru)))
    win = frame.window(u0, u1, vc - rv, vc + rv)
    u, v = frame.local(win)
    sdf, _ = geo.ellipse_sdf(u * np.float32(side), v, tc, vc, ru, rv)
    upper = np.clip((v - np.float32(vc - rv)) * np.float32(1.0 / rv), 0.0, 1.0)
    d[win] += np.float32(_BREAST * size) * geo.ramp(sdf, 2.0 * edge) * upper
