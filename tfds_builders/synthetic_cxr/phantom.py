"""Synthetic frontal chest radiographs with findings, boxes and pneumothorax masks.

The phantom is a projected-density model of the chest (:mod:`phantom_anatomy`) with findings
(:mod:`phantom_findings`) and distractors (:mod:`phantom_devices`), rendered at any resolution
``R >= 32`` straight on the pixel grid, with anti-aliased edges. A cohort of patients
(:mod:`phantom_cohort`) fixes every random choice up front: each patient has one anatomy shared by
1-4 images that differ in projection (PA/AP), positioning, exposure, noise and acute findings.

Image formation, per pixel: ``D`` is the projected density (the log-transformed detector signal,
as radiographs are displayed), times ``1 + n`` for a smooth exposure non-uniformity ``n`` (heel
effect); a display window maps it to ``[0, 1]``, then a gamma, black and white levels, quantum
noise with standard deviation ``sigma (0.3 + I)``, a 3-tap detector blur and uint8 quantisation.

Example::

  cohort = sample_cohort(num_patients=100, seed=0)
  render = Renderer(resolution=128)
  record = render(cohort, 0)   # {'image': (128, 128, 1) uint8, 'labels': (8,) float32, ...}
"""

from __future__ import annotations

from typing import Iterator, TypedDict

import numpy as np

from . import phantom_anatomy as anatomy
from . import phantom_devices as devices
from . import phantom_findings as findings
from . import phantom_geometry as geo
from .phantom_assets import assets
from .phantom_cohort import CLASS_NAMES, FOCAL_CLASSES, VIEWS, Cohort, sample_cohort

__all__ = ["CLASS_NAMES", "FOCAL_CLASSES", "VIEWS", "Cohort", "Record", "Renderer", "generate",
           "sample_cohort"]

AP_MAGNIFICATION = 1.05  # the whole chest, further from the detector on AP views
_BLACK_DENSITY, _WHITE_DENSITY = 0.03, 1.4  # display window on the projected density


class Record(TypedDict):
  """One synthetic radiograph.

  Keys:
    image: ``(R, R, 1)`` uint8.
    labels: ``(len(CLASS_NAMES),)`` float32 multi-hot, in ``CLASS_NAMES`` order.
    boxes: ``(K, 4)`` float32 normalised ``(ymin, xmin, ymax, xmax)`` of the focal findings.
    box_labels: ``(K,)`` int64 class ids of the boxes.
    mask: ``(R, R)`` uint8 pneumothorax mask in {0, 1} (all zero without pneumothorax).
    patient_id: patient identifier, shared by the patient's images.
    view: 'PA' or 'AP'.
  """

  image: np.ndarray
  labels: np.ndarray
  boxes: np.ndarray
  box_labels: np.ndarray
  mask: np.ndarray
  patient_id: str
  view: str


class Renderer:
  """Renders images of a cohort at one resolution (textures are built once per resolution)."""

  def __init__(self, resolution: int):
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or (
        resolution < 32):
      raise ValueError(f"resolution must be an int >= 32, got {resolution!r}")
    self.resolution = int(resolution)
    self.assets = assets(self.resolution)

  def __call__(self, cohort: Cohort, index: int) -> Record:
    """Renders image ``index`` of ``cohort``; a pure function of the cohort's row."""
    p = cohort.params(index)
    image, ann = self._draw(p)
    boxes = np.asarray(ann.boxes, np.float32).reshape(-1, 4)
    return Record(image=image, labels=cohort.labels[index].astype(np.float32), boxes=boxes,
                  box_labels=np.asarray(ann.box_labels, np.int64), mask=ann.mask,
                  patient_id=cohort.patient_id(int(p["patient"])), view=VIEWS[int(p["view"])])

  def _draw(self, p: dict[str, float]) -> tuple[np.ndarray, findings.Annotations]:
    r = self.resolution
    scale = p["zoom"] * (AP_MAGNIFICATION if p["view"] == 1 else 1.0)
    frame = geo.Frame.create(r, scale=scale, angle=p["angle"], shift=(p["shift_x"], p["shift_y"]))
    ann = findings.Annotations(r)
    th = anatomy.thorax(frame, p, dome_raise=findings.dome_raise(p))
    extra = findings.pleural(frame, p, th, ann)
    d = anatomy.density(frame, p, th, self.assets, vessel_gain=findings.vessel_gain(p))
    for window, density in extra:
      d[window] += density
    findings.parenchymal(d, frame, p, th, self.assets, ann)
    devices.draw_devices(d, frame, p, th.edge)
    return self._expose(d, p), ann

  def _expose(self, d: np.ndarray, p: dict[str, float]) -> np.ndarray:
    r = self.resolution
    field = int(p["noise_seed"]) % self.assets.noise.shape[1]
    heel = self.assets.noise_view(2, field, int(p["texture_row"] * r), int(p["texture_col"] * r))
    d *= np.float32(1.0) + np.float32(p["nonuniform"]) * heel
    d -= np.float32(_BLACK_DENSITY + p["level"])
    d *= np.float32(1.0 / (p["contrast"] * (_WHITE_DENSITY - _BLACK_DENSITY)))
    image = np.clip(d, 0.0, 1.0, out=d)
    np.power(image, np.float32(p["gamma"]), out=image)
    image *= np.float32(p["white"] - p["black"])
    image += np.float32(p["black"])
    devices.burn_text(image, p)
    rng = np.random.default_rng(int(p["noise_seed"]))
    noise = rng.standard_normal((r, r), dtype=np.float32)
    noise *= image + np.float32(0.3)
    noise *= np.float32(p["noise"])
    image += noise
    image = _blur(image)
    image *= np.float32(255.0)
    image += np.float32(0.5)
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8)[:, :, None]


def _blur(x: np.ndarray) -> np.ndarray:
  """Separable ``[1, 2, 1]/4`` blur with edge replication (detector MTF)."""
  y = np.empty_like(x)
  y[1:-1] = x[:-2] + x[2:]
  y[0] = x[0] + x[1]
  y[-1] = x[-1] + x[-2]
  y += x + x
  z = np.empty_like(y)
  z[:, 1:-1] = y[:, :-2] + y[:, 2:]
  z[:, 0] = y[:, 0] + y[:, 1]
  z[:, -1] = y[:, -1] + y[:, -2]
  z += y + y
  z *= np.float32(1.0 / 16.0)
  return z


def generate(num_patients: int, resolution: int, seed: int) -> Iterator[Record]:
  """All images of a freshly drawn cohort, in patient order."""
  cohort = sample_cohort(num_patients, seed)
  render = Renderer(resolution)
  for i in range(cohort.num_images):
    yield render(cohort, i)
