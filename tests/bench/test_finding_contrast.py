"""benchmarks/finding_contrast.py: the measurement on hand-built findings, the CNR as the z-score
it is defined to be, switching a finding off in the phantom, and the command at a tiny size."""

import json
import math

import numpy as np
import pytest

from benchmarks import finding_contrast as fc
from tfds_builders.synthetic_cxr import phantom


def _disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
  y, x = np.mgrid[:size, :size]
  return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2


def _blurred_noise(rng, shape, white_sd):
  """White noise of sd ``white_sd`` through the detector's ``[1, 2, 1]/4`` blur."""
  return fc.blur(white_sd * rng.standard_normal(shape))


def test_a_disc_of_known_contrast_gives_its_area_contrast_and_noise():
  size, contrast, white_sd = 96, 12.0, 4.0
  disc = _disc(size, (40, 50), 9.0)
  normal = np.full((size, size), 100.0)
  clean = normal + contrast * disc
  noisy = clean + _blurred_noise(np.random.default_rng(0), (size, size), white_sd)
  m = fc.measure(clean, normal, noisy, margin=3)
  assert m.area == disc.sum() == 253  # lattice points in a disc of radius 9
  assert m.peak == contrast and m.mean == contrast
  # Pixel sd of the blurred noise: white sd x the kernel's L2 norm (3/8) = 1.5.
  assert m.noise_sd == pytest.approx(white_sd * 0.375, rel=0.1)
  # Local CNR: the 3x3 window at the first pixel of largest contrast, the disc's top pixel
  # (31, 50); below it the chord y=32 spans x in 46..54, so the window holds 1 + 3 pixels.
  window = np.zeros_like(disc)
  window[30:33, 49:52] = True
  assert (window & disc).sum() == 4
  assert m.local_cnr == pytest.approx(fc.cnr(clean - normal, window & disc, m.noise_sd))


def test_below_threshold_and_negative_changes():
  normal = np.zeros((20, 20))
  clean = normal.copy()
  clean[5, 5] = 1.0  # one grey level: rounding, not a finding
  clean[10:12, 10:12] = -6.0  # a lucency counts by its magnitude
  m = fc.measure(clean, normal, clean, margin=0)
  assert (m.area, m.peak, m.mean, m.noise_sd, m.cnr) == (4, 6.0, 6.0, 0.0, math.inf)
  empty = fc.measure(normal, normal, normal)
  assert empty.area == 0 and math.isnan(empty.mean) and math.isnan(empty.cnr)


def test_cnr_of_a_square_against_its_closed_form():
  """Side L >= 2 inside the image: the blurred indicator's squared norm is (L - 0.75)^2 (per
  axis: L - 2 ones, two 3/4 and two 1/4), so CNR = c L^2 (3/8) / (sigma (L - 0.75))."""
  for side, c, sigma in ((2, 5.0, 2.0), (4, 3.0, 1.5), (10, 2.0, 1.0)):
    area = np.zeros((30, 30), bool)
    area[8:8 + side, 8:8 + side] = True
    d = np.where(area, c, 0.0)
    expected = c * side**2 * 0.375 / (sigma * (side - 0.75))
    assert fc.cnr(d, area, sigma) == pytest.approx(expected, rel=1e-12)
  # One pixel: contrast over pixel sd.
  one = np.zeros((9, 9), bool)
  one[4, 4] = True
  assert fc.cnr(np.where(one, 7.0, 0.0), one, 2.0) == pytest.approx(3.5)


def test_cnr_is_the_z_score_of_the_sign_matched_sum():
  """Monte Carlo: the sd of sum_A sign(d) n over many blurred-noise fields equals
  sum_A |d| / CNR, for a finding with both signs (a pleural line beside a lucent rim)."""
  size, white_sd = 24, 3.0
  d = np.zeros((size, size))
  d[6:18, 8:10] = 5.0
  d[6:18, 10:14] = -2.0
  area = d != 0
  sigma = white_sd * 0.375
  rng = np.random.default_rng(1)
  sums = [np.sum(np.sign(d)[area] * _blurred_noise(rng, d.shape, white_sd)[area])
          for _ in range(3000)]
  assert np.std(sums) == pytest.approx(np.abs(d).sum() / fc.cnr(d, area, sigma), rel=0.05)


def test_switching_a_finding_off_changes_only_that_finding():
  cohort = phantom.sample_cohort(60, seed=3)
  render = phantom.Renderer(64)
  nodule = int(fc.positives(cohort, "nodule", 1)[0])
  off = fc.variant(cohort, nodule, without="nodule")
  assert off.labels[nodule, phantom.CLASS_NAMES.index("nodule")] == 0
  assert cohort.labels[nodule, phantom.CLASS_NAMES.index("nodule")] == 1  # a copy
  quiet = render(fc.variant(cohort, nodule, noise_free=True), nodule)["image"]
  again = render(fc.variant(cohort, nodule, noise_free=True), nodule)["image"]
  np.testing.assert_array_equal(quiet, again)  # noise-free renders are deterministic
  m = fc.measure_finding(render, cohort, nodule, "nodule")
  assert 5 <= m.area <= 60 and m.peak > 5  # a nodule of 2-3 px and its blur
  assert 0.5 < m.noise_sd < 6
  # Cardiomegaly: the heart is set back to the patient's normal ratio.
  heart = int(fc.positives(cohort, "cardiomegaly", 1)[0])
  p = fc.variant(cohort, heart, without="cardiomegaly").params(heart)
  assert p["ctr"] == p["ctr_normal"] < cohort.params(heart)["ctr"]
  # A negative image has nothing to switch off: the renders agree pixel for pixel.
  negative = int(np.flatnonzero(cohort.labels[:, phantom.CLASS_NAMES.index("mass")] == 0)[0])
  assert fc.measure_finding(render, cohort, negative, "mass").area == 0


def test_simulated_scores_have_the_asked_auc():
  labels = (np.random.default_rng(0).random((20000, 2)) < 0.3).astype(np.uint8)
  scores = fc.simulated_scores(labels, 0.75, np.random.default_rng(1))
  from otcxr_jax.evaluation import metrics
  np.testing.assert_allclose(metrics.per_class_auc(labels, scores), 0.75, atol=0.01)


def test_test_split_labels_are_the_builders_test_split():
  from tfds_builders.synthetic_cxr import synthetic_cxr_dataset_builder as scb
  labels = fc.test_split_labels(40, seed=0)
  # 10% of 40 patients, each with 1-4 images.
  assert 4 <= len(labels) <= 16 and labels.shape[1] == len(phantom.CLASS_NAMES)
  assert scb.SPLIT_FRACTIONS["test"] == 0.1
  rows = [{"patients": 10, "half_width": {"0.75": {"mean": 0.02}}},
          {"patients": 20, "half_width": {"0.75": {"mean": 0.014}}},
          {"patients": 30, "half_width": {"0.75": {"mean": 0.01}}}]
  assert fc.chosen_patients(rows, 0.75, 0.015) == 20
  assert fc.chosen_patients(rows, 0.75, 0.005) is None


def test_command_at_a_tiny_size(tmp_path):
  path = fc.run(tmp_path, resolutions=[32, 48], examples=2, patients=80, seed=0,
                test_patients=[40], aucs=[0.75], test_repeats=1, target=0.015)
  text = path.read_text()
  for name in phantom.CLASS_NAMES:
    assert f"| {name} | 32² |" in text and f"| {name} | 48² |" in text
  assert (tmp_path / "cnr_by_resolution.png").stat().st_size > 0
  assert (tmp_path / "test_interval.png").stat().st_size > 0
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results["contrast"]) == set(phantom.CLASS_NAMES)
  assert results["contrast"]["nodule"]["48"]["visible"] == 1.0
  assert results["test_size"][0]["patients"] == 40
  # 40 patients give a test split of a few images: far from ±0.015.
  assert results["chosen_patients"] is None
  with pytest.raises(ValueError, match="positive images"):
    fc.run(tmp_path, resolutions=[32], examples=500, patients=20, seed=0, test_patients=[],
           aucs=[0.75], test_repeats=1, target=0.015)
