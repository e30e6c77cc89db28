"""The chest phantom: determinism, record format, label prevalences, masks and boxes against the
rendered findings, cardiothoracic ratio, and the soft-shape geometry against closed forms."""

import dataclasses
import math

import numpy as np
import pytest

from tfds_builders.synthetic_cxr import phantom
from tfds_builders.synthetic_cxr import phantom_anatomy as anatomy
from tfds_builders.synthetic_cxr import phantom_cohort as pc
from tfds_builders.synthetic_cxr import phantom_geometry as geo
from tfds_builders.synthetic_cxr.phantom_assets import text_bitmap

CLS = {name: i for i, name in enumerate(phantom.CLASS_NAMES)}
RES = 64


@pytest.fixture(scope="module")
def cohort():
  return phantom.sample_cohort(150, seed=11)


@pytest.fixture(scope="module")
def records(cohort):
  render = phantom.Renderer(RES)
  return [render(cohort, i) for i in range(cohort.num_images)]


def _without(cohort: phantom.Cohort, index: int, finding: str) -> phantom.Cohort:
  """The same cohort with ``finding`` removed from image ``index`` (and its patient if chronic)."""
  patients = {k: v.copy() for k, v in cohort.patients.items()}
  images = {k: v.copy() for k, v in cohort.images.items()}
  labels = cohort.labels.copy()
  if finding in patients:
    patients[finding][images["patient"][index]] = 0
  else:
    images[finding][index] = 0
  labels[index, CLS[finding]] = 0
  return dataclasses.replace(cohort, patients=patients, images=images, labels=labels)


def test_same_seed_gives_identical_cohorts_and_images():
  a, b = phantom.sample_cohort(30, seed=5), phantom.sample_cohort(30, seed=5)
  assert a.patients.keys() == b.patients.keys() and a.images.keys() == b.images.keys()
  for table_a, table_b in ((a.patients, b.patients), (a.images, b.images)):
    for key in table_a:
      np.testing.assert_array_equal(table_a[key], table_b[key], err_msg=key)
  np.testing.assert_array_equal(a.labels, b.labels)
  render = phantom.Renderer(RES)
  last = a.num_images - 1
  first = render(a, last)
  for i in range(a.num_images):  # rendering other images in between changes nothing
    render(b, i)
  again = render(b, last)
  for key in ("image", "labels", "boxes", "box_labels", "mask"):
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
  assert (first["patient_id"], first["view"]) == (again["patient_id"], again["view"])


def test_different_seeds_and_images_differ():
  render = phantom.Renderer(RES)
  a, b = phantom.sample_cohort(20, seed=0), phantom.sample_cohort(20, seed=1)
  assert not np.array_equal(a.patients["thorax_hw"], b.patients["thorax_hw"])
  images_a = np.stack([render(a, i)["image"] for i in range(8)]).astype(np.float32)
  images_b = np.stack([render(b, i)["image"] for i in range(8)]).astype(np.float32)
  assert np.abs(images_a - images_b).mean(axis=(1, 2, 3)).min() > 2.0
  # Within a cohort, every pair of images differs too.
  flat = images_a.reshape(8, -1)
  gaps = np.abs(flat[:, None] - flat[None]).mean(-1)[np.triu_indices(8, 1)]
  assert gaps.min() > 2.0


@pytest.mark.parametrize("resolution", [32, 64, 97])
def test_record_format(resolution):
  cohort = phantom.sample_cohort(6, seed=2)
  render = phantom.Renderer(resolution)
  for i in range(cohort.num_images):
    r = render(cohort, i)
    assert r["image"].shape == (resolution, resolution, 1) and r["image"].dtype == np.uint8
    assert r["mask"].shape == (resolution, resolution) and r["mask"].dtype == np.uint8
    assert set(np.unique(r["mask"])) <= {0, 1}
    assert r["labels"].shape == (8,) and r["labels"].dtype == np.float32
    assert set(np.unique(r["labels"])) <= {0.0, 1.0}
    assert r["boxes"].dtype == np.float32 and r["boxes"].shape == (len(r["box_labels"]), 4)
    assert r["box_labels"].dtype == np.int64
    assert r["patient_id"] == cohort.patient_id(int(cohort.images["patient"][i]))
    assert r["view"] == phantom.VIEWS[int(cohort.images["view"][i])]
    assert 20 < r["image"].mean() < 235 and r["image"].std() > 20  # a picture, not a flat field


def test_images_of_a_patient_share_the_patient_and_its_anatomy(cohort):
  owner = cohort.images["patient"]
  assert np.all(np.diff(owner) >= 0)  # contiguous, in patient order
  counts = np.bincount(owner, minlength=cohort.num_patients)
  assert counts.min() >= 1 and counts.max() <= 4
  patient = int(np.argmax(counts))
  rows = cohort.images_of([patient])
  assert len(rows) == counts[patient] >= 2
  first, second = cohort.params(int(rows[0])), cohort.params(int(rows[1]))
  for key in cohort.patients:
    assert first[key] == second[key], key
  chronic = [CLS["cardiomegaly"], CLS["nodule"], CLS["mass"]]
  np.testing.assert_array_equal(cohort.labels[rows][:, chronic],
                                np.repeat(cohort.labels[rows[:1]][:, chronic], len(rows), 0))


def test_label_prevalences_match_the_documented_rates():
  c = phantom.sample_cohort(3000, seed=4)
  edema = pc.P_EDEMA * (1 - pc.P_CARDIOMEGALY) + pc.P_EDEMA_IF_CARDIOMEGALY * pc.P_CARDIOMEGALY
  effusion = pc.P_EFFUSION * (1 - edema) + pc.P_EFFUSION_IF_EDEMA * edema
  expected = {
      "atelectasis": pc.P_ATELECTASIS, "cardiomegaly": pc.P_CARDIOMEGALY, "effusion": effusion,
      "mass": pc.P_MASS, "nodule": pc.P_NODULE, "pneumothorax": pc.P_PNEUMOTHORAX,
      "consolidation": pc.P_CONSOLIDATION, "edema": edema,
  }
  # No finding: no chronic finding, then neither edema (its no-cardiomegaly rate) nor effusion
  # nor any independent acute finding.
  none = ((1 - pc.P_CARDIOMEGALY) * (1 - pc.P_NODULE) * (1 - pc.P_MASS)
          * (1 - pc.P_EDEMA) * (1 - pc.P_EFFUSION)
          * (1 - pc.P_PNEUMOTHORAX) * (1 - pc.P_CONSOLIDATION) * (1 - pc.P_ATELECTASIS))
  n = c.num_images
  design = 2.5  # images of one patient share chronic findings: inflate the binomial variance
  for name, p in {**expected, "no finding": none}.items():
    got = (c.labels.sum(1) == 0).mean() if name == "no finding" else c.labels[:, CLS[name]].mean()
    tol = 5 * math.sqrt(design * p * (1 - p) / n)
    assert abs(got - p) < tol, (name, got, p)
  assert 0.55 <= none <= 0.60
  # Cardiomegaly is a cardiothoracic ratio above one half.
  ctr = c.patients["ctr"][c.images["patient"]]
  np.testing.assert_array_equal(ctr > 0.5, c.labels[:, CLS["cardiomegaly"]] == 1)


def test_mask_is_non_empty_exactly_with_pneumothorax(records):
  with_pneumothorax = 0
  for r in records:
    present = r["labels"][CLS["pneumothorax"]] == 1
    assert r["mask"].any() == present
    with_pneumothorax += present
  assert with_pneumothorax >= 5


def test_boxes_lie_in_the_image_and_match_the_focal_labels(records):
  focal = {CLS[n] for n in phantom.FOCAL_CLASSES}
  boxed = 0
  for r in records:
    b = r["boxes"]
    assert np.all((b >= 0) & (b <= 1))
    assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    present = {int(c) for c in np.flatnonzero(r["labels"])} & focal
    assert set(r["box_labels"].tolist()) == present
    boxed += len(b)
  assert boxed >= 50


def _pixel_box(box, dilate: int = 0):
  y0, x0, y1, x1 = np.round(np.asarray(box) * RES).astype(int)
  return slice(max(y0 - dilate, 0), y1 + dilate), slice(max(x0 - dilate, 0), x1 + dilate)


@pytest.mark.parametrize("finding", ["nodule", "mass", "consolidation", "atelectasis",
                                     "effusion"])
def test_box_encloses_the_rendered_finding(cohort, records, finding):
  """Removing the finding (same noise) changes the image where its box says it is."""
  render = phantom.Renderer(RES)
  rows = [i for i, r in enumerate(records) if r["labels"][CLS[finding]] == 1][:4]
  assert rows
  for i in rows:
    with_it = records[i]
    without = render(_without(cohort, i, finding), i)
    diff = with_it["image"][:, :, 0].astype(np.float32) - without["image"][:, :, 0]
    box = with_it["boxes"][with_it["box_labels"] == CLS[finding]][0]
    inside = diff[_pixel_box(box)]
    assert inside.mean() > 2.0, (finding, i)  # the finding is an opacity: brighter in its box
    if finding in ("nodule", "mass"):  # compact: the change lies in the (blur-dilated) box
      change = np.abs(diff)
      assert change[_pixel_box(box, dilate=2)].sum() >= 0.9 * change.sum(), (finding, i)


def test_pneumothorax_mask_marks_the_lucent_rim(cohort, records):
  render = phantom.Renderer(RES)
  rows = [i for i, r in enumerate(records) if r["labels"][CLS["pneumothorax"]] == 1][:4]
  for i in rows:
    without = render(_without(cohort, i, "pneumothorax"), i)
    diff = records[i]["image"][:, :, 0].astype(np.float32) - without["image"][:, :, 0]
    rim = records[i]["mask"] == 1
    assert diff[rim].mean() < -2.0  # air without lung markings: darker
    assert np.abs(diff[~rim]).mean() < np.abs(diff[rim]).mean()


@pytest.mark.parametrize("view", [0, 1])
def test_heart_width_is_the_cardiothoracic_ratio(view):
  """Measured on the drawn silhouette: the horizontal extent of heart coverage > 1/2 (right and
  left borders at their own levels, as the CTR is read) over the thoracic width."""
  c = phantom.sample_cohort(40, seed=9)
  res = 512
  frame = geo.Frame.create(res, scale=1.0, angle=0.0, shift=(0.0, 0.0))
  for i in range(0, c.num_images, 7):
    p = {**c.params(i), "view": view}
    th = anatomy.thorax(frame, p)
    cols = np.flatnonzero((th.heart > 0.5).any(axis=0))
    width_px = cols[-1] - cols[0] + 1
    ctr = width_px * frame.pixel / (2 * p["thorax_hw"])
    magnification = anatomy.AP_HEART_MAGNIFICATION if view == 1 else 1.0
    assert abs(ctr - p["ctr"] * magnification) < 2.5 * frame.pixel, (i, ctr, p["ctr"])


def test_bad_arguments_are_refused():
  for resolution in (31, 64.0, True, "64"):
    with pytest.raises(ValueError, match="resolution"):
      phantom.Renderer(resolution)
  with pytest.raises(ValueError, match="num_patients"):
    phantom.sample_cohort(0, seed=0)
  with pytest.raises(ValueError, match="seed"):
    phantom.sample_cohort(3, seed=-1)
  with pytest.raises(ValueError, match="images_per_patient"):
    phantom.sample_cohort(3, seed=0, images_per_patient=(0, 2))
  c = phantom.sample_cohort(3, seed=0)
  with pytest.raises(IndexError):
    c.params(c.num_images)
  with pytest.raises(ValueError, match="glyphs"):
    text_bitmap("X-RAY", 8)


# Geometry primitives against closed forms.


def test_ramp_is_the_box_filtered_indicator():
  d = np.array([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], np.float32)
  np.testing.assert_allclose(geo.ramp(d, 1.0), [1, 1, 0.75, 0.5, 0.25, 0, 0])


def test_ellipse_sdf_is_exact_for_circles_and_segment_distance_for_points():
  u = np.array([0.0, 0.3, 1.0, -2.0], np.float32)
  v = np.array([0.0, 0.4, 0.0, 0.0], np.float32)
  d, rho = geo.ellipse_sdf(u, v, 0.0, 0.0, 0.5, 0.5)
  np.testing.assert_allclose(d, np.hypot(u, v) - 0.5, atol=1e-6)
  np.testing.assert_allclose(rho, np.hypot(u, v) / 0.5, atol=1e-6)
  dist = geo.segment_distance(u, v, (0.0, 1.0), (1.0, 1.0))
  np.testing.assert_allclose(dist, [1.0, 0.6, 1.0, math.hypot(2.0, 1.0)], atol=1e-6)


def test_frame_maps_pixels_to_patient_coordinates_and_back():
  frame = geo.Frame.create(48, scale=1.07, angle=0.1, shift=(0.05, -0.08))
  for i, j in ((0, 0), (10, 37), (47, 3)):
    row, col = frame.to_pixels(float(frame.u[i, j]), float(frame.v[i, j]))
    assert abs(row - i) < 1e-4 and abs(col - j) < 1e-4
  rows, cols = frame.window(-0.2, 0.1, 0.3, 0.5)
  inside = ((frame.u >= -0.2) & (frame.u <= 0.1) & (frame.v >= 0.3) & (frame.v <= 0.5))
  hit_rows, hit_cols = np.nonzero(inside)
  assert rows.start <= hit_rows.min() and hit_rows.max() < rows.stop
  assert cols.start <= hit_cols.min() and hit_cols.max() < cols.stop


def test_box_of_spans_the_thresholded_pixels():
  cover = np.zeros((5, 6), np.float32)
  cover[1:3, 2:5] = 0.8
  cover[4, 0] = 0.2  # below the threshold
  box = geo.box_of(cover, (slice(10, 15), slice(20, 26)), 0.3, 40)
  assert box == pytest.approx((11 / 40, 22 / 40, 13 / 40, 25 / 40))
  assert geo.box_of(np.zeros((3, 3)), (slice(0, 3), slice(0, 3)), 0.3, 40) is None
