"""Random patients, their images and their findings: the parameter tables of the chest phantom.

A cohort is drawn once from a seed with vectorised numpy draws: a per-patient table (anatomy
that every image of the patient shares, and chronic findings: cardiomegaly, nodule, mass) and a
per-image table (projection, positioning, exposure, distractors and acute findings: atelectasis,
effusion, pneumothorax, consolidation, edema). Rendering an image is a pure function of its row,
so any subset of images (a split, a shard) renders identically in any order.

Prevalences follow the shape of NIH ChestX-ray14 (most images normal, effusion and atelectasis
common, edema rare, edema with cardiomegaly and effusion with edema co-occurring) with every class
frequent enough to be learnable from ~10^4 images. Expected prevalence per image: atelectasis
0.10, cardiomegaly 0.07, effusion 0.114, mass 0.045, nodule 0.065, pneumothorax 0.05,
consolidation 0.06, edema 0.041; no finding 0.586.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

CLASS_NAMES = ("atelectasis", "cardiomegaly", "effusion", "mass", "nodule", "pneumothorax",
               "consolidation", "edema")
"""Finding classes, in label-vector order (the NIH ChestX-ray14 order of these eight)."""

FOCAL_CLASSES = ("atelectasis", "effusion", "mass", "nodule", "consolidation")
"""Classes that come with a bounding box."""

VIEWS = ("PA", "AP")

_CLS = {name: i for i, name in enumerate(CLASS_NAMES)}

# Patient anatomy: uniform ranges, in patient units (the image half-width at unit scale).
_PATIENT_RANGES = {
    "thorax_hw": (0.72, 0.82),    # half of the thoracic width (inner rib margin to margin)
    "asym": (-0.03, 0.03),        # right/left difference of the lung widths
    "lung_ct": (0.26, 0.32),      # lateral position of the lung ellipse centre
    "lung_cv": (0.06, 0.18),      # level of the widest point of the lungs
    "apex": (-0.80, -0.68),       # level of the lung apices
    "egg": (0.12, 0.26),          # narrowing of the lungs towards the apex
    "dome": (0.26, 0.42),         # level of the right hemidiaphragm dome
    "dome_gap": (0.01, 0.07),     # the left dome lies lower by this much
    "dome_t": (0.30, 0.40),       # lateral position of the domes' summits
    "dome_curv": (0.7, 1.2),      # curvature of the domes
    "ctr_normal": (0.40, 0.50),   # cardiothoracic ratio of the heart when normal (PA)
    "heart_shift": (0.24, 0.40),  # share of the heart's width right of the midline
    "heart_aspect": (0.70, 0.86),
    "heart_tilt": (0.35, 0.60),   # long axis from the vertical towards the left, radians
    "med_hw": (0.11, 0.15),      # half-width of the upper mediastinum
    "knob_r": (0.055, 0.075),     # aortic knob radius
    "knob_v": (-0.40, -0.30),
    "trachea_u": (-0.02, 0.02),
    "spine_hw": (0.075, 0.095),
    "vert_pitch": (0.095, 0.115),
    "vert_phase": (0.0, 1.0),
    "rib_top": (-0.90, -0.82),    # where the first posterior rib meets the spine
    "rib_len": (1.30, 1.45),      # vertical span of ten posterior ribs at the spine
    "rib_gamma": (0.80, 0.90),    # spacing of the ribs grows downwards as k ~ depth^gamma
    "rib_rise": (0.35, 0.50),     # posterior ribs rise laterally, then fall
    "rib_curv": (1.0, 1.3),
    "rib_width": (0.40, 0.52),    # share of a rib period taken by the rib
    "clav_v": (-0.62, -0.54),     # clavicle level (medial end) on a PA view
    "clav_rise": (0.14, 0.26),
    "clav_th": (0.05, 0.065),
    "chest_wall": (0.10, 0.17),  # body half-width minus thorax_hw
    "neck_hw": (0.20, 0.28),
    "habitus": (0.0, 1.0),        # soft-tissue thickness
    "hilum_t": (0.13, 0.19),
    "hilum_v": (-0.12, -0.02),
    "vessel_gain": (0.8, 1.2),
    "bubble_r": (0.05, 0.10),
    "breast_size": (0.5, 1.0),
}

# Image acquisition: uniform ranges.
_IMAGE_RANGES = {
    "angle": (-0.12, 0.12),       # radians (about 7 degrees)
    "shift_x": (-0.10, 0.10),
    "shift_y": (-0.10, 0.10),
    "zoom": (0.88, 1.08),
    "inspiration": (-0.06, 0.06),  # dome level offset
    "contrast": (0.85, 1.2),       # display window width (penetration, processing)
    "level": (-0.08, 0.06),        # display window centre
    "gamma": (0.75, 1.3),
    "black": (0.0, 0.08),
    "white": (0.9, 1.0),
    "noise": (0.008, 0.03),
    "nonuniform": (0.0, 0.06),
}

# Finding probabilities.
P_CARDIOMEGALY, P_NODULE, P_MASS = 0.07, 0.065, 0.045
P_PNEUMOTHORAX, P_CONSOLIDATION, P_ATELECTASIS = 0.05, 0.06, 0.10
P_EDEMA, P_EDEMA_IF_CARDIOMEGALY = 0.025, 0.25
P_EFFUSION, P_EFFUSION_IF_EDEMA = 0.10, 0.45
P_AP = 0.35


@dataclasses.dataclass(frozen=True)
class Cohort:
  """Parameter tables of a cohort of patients and their images.

  Attributes:
    seed: the seed the cohort was drawn from.
    patients: per-patient columns, each of shape ``(num_patients,)``.
    images: per-image columns, each of shape ``(num_images,)``; ``images['patient']`` is the
      patient row of each image; images of one patient are contiguous.
    labels: ``(num_images, len(CLASS_NAMES))`` multi-hot uint8 labels.
  """

  seed: int
  patients: dict[str, np.ndarray]
  images: dict[str, np.ndarray]
  labels: np.ndarray

  @property
  def num_patients(self) -> int:
    return len(self.patients["thorax_hw"])

  @property
  def num_images(self) -> int:
    return len(self.images["patient"])

  def patient_id(self, patient: int) -> str:
    return f"p{patient:06d}"

  def images_of(self, patients: np.ndarray) -> np.ndarray:
    """Sorted image rows of the given patient rows."""
    return np.flatnonzero(np.isin(self.images["patient"], np.asarray(patients)))

  def params(self, image: int) -> dict[str, float]:
    """All parameters of one image: its patient's columns merged with its own."""
    if not 0 <= image < self.num_images:
      raise IndexError(f"image index {image} out of range [0, {self.num_images})")
    out = {k: col[self.images["patient"][image]].item() for k, col in self.patients.items()}
    out.update({k: col[image].item() for k, col in self.images.items()})
    return out


def sample_cohort(num_patients: int, seed: int, *,
                  images_per_patient: tuple[int, int] = (1, 4)) -> Cohort:
  """Draws a cohort: ``num_patients`` patients with ``images_per_patient`` images each (uniform).

  Args:
    num_patients: number of patients, >= 1.
    seed: non-negative integer seed; the cohort is a deterministic function of all arguments.
    images_per_patient: inclusive range of the number of images of a patient.
  """
  if not isinstance(num_patients, (int, np.integer)) or num_patients < 1:
    raise ValueError(f"num_patients must be a positive int, got {num_patients!r}")
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}")
  lo, hi = images_per_patient
  if not 1 <= lo <= hi:
    raise ValueError(f"images_per_patient must be (lo, hi) with 1 <= lo <= hi, got "
                     f"{images_per_patient!r}")
  rng = np.random.default_rng([int(seed), 0x0C7C8])
  patients = _draw(rng, _PATIENT_RANGES, num_patients)
  patients.update(_chronic_findings(rng, patients))
  patients["female"] = rng.random(num_patients) < 0.5
  patients["bubble"] = rng.random(num_patients) < 0.7
  patients["vessel_tree_r"] = rng.integers(0, 1 << 16, num_patients)
  patients["vessel_tree_l"] = rng.integers(0, 1 << 16, num_patients)

  counts = rng.integers(lo, hi + 1, num_patients)
  owner = np.repeat(np.arange(num_patients), counts)
  n = len(owner)
  images = {"patient": owner}
  images.update(_draw(rng, _IMAGE_RANGES, n))
  images["view"] = (rng.random(n) < P_AP).astype(np.int64)
  images.update(_distractors(rng, images["view"]))
  images.update(_acute_findings(rng, patients, owner))
  images["noise_seed"] = rng.integers(0, 1 << 62, n)

  labels = np.zeros((n, len(CLASS_NAMES)), np.uint8)
  for name in CLASS_NAMES:
    labels[:, _CLS[name]] = (patients[name][owner] if name in patients else images[name])
  return Cohort(int(seed), patients, images, labels)


def _draw(rng: np.random.Generator, ranges: dict[str, tuple[float, float]],
          n: int) -> dict[str, np.ndarray]:
  return {k: rng.uniform(lo, hi, n) for k, (lo, hi) in ranges.items()}


def _lung_point(rng: np.random.Generator, p: dict[str, np.ndarray], margin: np.ndarray,
                tries: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Side (-1 right, +1 left) and lung-local ``(t, v)`` of points at least ``margin`` inside a lung.

  Rejection sampling against the lung outline of :mod:`phantom_anatomy` (the egg-shaped ellipse
  above the diaphragm and lateral to mediastinum and heart), vectorised over patients.
  """
  n = len(margin)
  side = np.where(rng.random(n) < 0.5, -1, 1)
  t = rng.uniform(0.15, 0.8, (tries, n))
  v = rng.uniform(-0.8, 0.45, (tries, n))
  hw = p["thorax_hw"] * (1 + p["asym"] * side)
  ct, cv = p["lung_ct"], p["lung_cv"]
  a, b = hw - ct, cv - p["apex"]
  y = (v - cv) / b
  x = (t - ct) / (a * (1 + p["egg"] * y))
  inside = np.sqrt(np.abs(x) ** 3 + y ** 2) < 1 - margin / np.sqrt(a * b)
  dome = p["dome"] + np.where(side > 0, p["dome_gap"], 0.0)
  inside &= v < dome + p["dome_curv"] * (t - p["dome_t"]) ** 2 - margin - 0.05
  heart_width = 2 * p["ctr"] * p["thorax_hw"]
  heart_border = heart_width * np.where(side > 0, 1 - p["heart_shift"], p["heart_shift"])
  inside &= (t > p["med_hw"] + margin + 0.04) & ((v < p["hilum_v"]) | (t > heart_border + margin))
  first = np.argmax(inside, axis=0)
  ok = inside[first, np.arange(n)]
  t_pick = np.where(ok, t[first, np.arange(n)], ct + 0.3 * (hw - ct))
  v_pick = np.where(ok, v[first, np.arange(n)], p["apex"] + 0.35)
  return side, t_pick, v_pick


def _chronic_findings(rng: np.random.Generator, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  n = len(p["thorax_hw"])
  out = {
      "cardiomegaly": (rng.random(n) < P_CARDIOMEGALY).astype(np.uint8),
      "nodule": (rng.random(n) < P_NODULE).astype(np.uint8),
      "mass": (rng.random(n) < P_MASS).astype(np.uint8),
  }
  out["ctr"] = np.where(out["cardiomegaly"] == 1, rng.uniform(0.52, 0.60, n), p["ctr_normal"])
  out["nodule_r"] = rng.uniform(0.03, 0.045, n)
  out["nodule_side"], out["nodule_t"], out["nodule_v"] = _lung_point(
      rng, {**p, **out}, out["nodule_r"])
  out["nodule_density"] = rng.uniform(0.2, 0.3, n)
  out["mass_r"] = rng.uniform(0.075, 0.12, n)
  out["mass_side"], out["mass_t"], out["mass_v"] = _lung_point(rng, {**p, **out}, out["mass_r"])
  out["mass_density"] = rng.uniform(0.16, 0.26, n)
  out["mass_phase"] = rng.uniform(0, 2 * math.pi, n)
  out["mass_lobulation"] = rng.uniform(0.05, 0.15, n)
  return out


def _acute_findings(rng: np.random.Generator, p: dict[str, np.ndarray],
                    owner: np.ndarray) -> dict[str, np.ndarray]:
  n = len(owner)
  cardiomegaly = p["cardiomegaly"][owner] == 1
  edema = rng.random(n) < np.where(cardiomegaly, P_EDEMA_IF_CARDIOMEGALY, P_EDEMA)
  out = {
      "edema": edema.astype(np.uint8),
      "effusion": (rng.random(n) < np.where(edema, P_EFFUSION_IF_EDEMA, P_EFFUSION)).astype(
          np.uint8),
      "pneumothorax": (rng.random(n) < P_PNEUMOTHORAX).astype(np.uint8),
      "consolidation": (rng.random(n) < P_CONSOLIDATION).astype(np.uint8),
      "atelectasis": (rng.random(n) < P_ATELECTASIS).astype(np.uint8),
  }
  out["edema_severity"] = rng.uniform(0.6, 1.0, n)
  # Effusion: 0 right, 1 left, 2 both; bilateral effusions are typical of edema.
  out["effusion_sides"] = np.where(edema & (rng.random(n) < 0.6), 2, rng.integers(0, 3, n))
  out["effusion_level"] = rng.uniform(0.0, 1.0, n)
  out["pneumothorax_side"] = np.where(rng.random(n) < 0.5, -1, 1)
  out["pneumothorax_depth"] = rng.uniform(0.07, 0.16, n)
  out["consolidation_side"] = np.where(rng.random(n) < 0.5, -1, 1)
  out["consolidation_lobe"] = rng.integers(0, 2, n)  # 0 upper, 1 lower
  out["consolidation_density"] = rng.uniform(0.22, 0.32, n)
  out["atelectasis_side"] = np.where(rng.random(n) < 0.5, -1, 1)
  out["atelectasis_t"] = rng.uniform(0.25, 0.55, n)  # across the lung: 0 medial, 1 lateral
  out["atelectasis_dv"] = rng.uniform(0.10, 0.22, n)  # height of the band above the dome
  out["atelectasis_angle"] = rng.uniform(-0.35, 0.35, n)
  out["atelectasis_len"] = rng.uniform(0.16, 0.28, n)
  out["atelectasis_th"] = rng.uniform(0.03, 0.05, n)
  out["atelectasis_raise"] = rng.uniform(0.03, 0.08, n)
  out["texture_row"] = rng.random(n)
  out["texture_col"] = rng.random(n)
  out["texture_field"] = rng.integers(0, 1 << 16, n)
  return out


def _distractors(rng: np.random.Generator, view: np.ndarray) -> dict[str, np.ndarray]:
  n = len(view)
  ap = view == 1
  return {
      "marker": rng.integers(0, 3, n),  # 0 none, 1 'L', 2 'R'
      "marker_corner": rng.integers(0, 2, n),
      "text": np.where(ap, rng.choice(3, n, p=[0.25, 0.55, 0.20]),
                       rng.choice(3, n, p=[0.95, 0.0, 0.05])),  # 0 none, 1 PORTABLE, 2 AP/PA
      "ett": rng.random(n) < np.where(ap, 0.25, 0.0),
      "ng_tube": rng.random(n) < np.where(ap, 0.25, 0.01),
      "cvc": rng.random(n) < np.where(ap, 0.30, 0.03),
      "cvc_side": np.where(rng.random(n) < 0.6, -1, 1),
      "ecg": rng.random(n) < np.where(ap, 0.40, 0.05),
      "ecg_seed": rng.integers(0, 1 << 30, n),
  }
