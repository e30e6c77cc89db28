"""The round findings' known-location and search AUCs (benchmarks/finding_search.py), on planted
blobs whose answers are known, against scikit-learn's AUC."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks import finding_search

SIZE = 32


def _blob(centre, radius=2.0, amplitude=20.0):
  rows, cols = np.mgrid[:SIZE, :SIZE]
  return amplitude * np.exp(-((rows - centre[0])**2 + (cols - centre[1])**2) / (2 * radius**2))


def _images(clutter: int, n=120, seed=0):
  """``n`` noisy images, half with a blob at a random interior place (labels, centres), and
  ``clutter`` blobs like it at random places in every image."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 2
  images, centres = [], []
  for label in labels:
    x = 100 + rng.normal(0, 1, (SIZE, SIZE))
    for _ in range(clutter):
      x += _blob(rng.integers(8, SIZE - 8, 2))
    centre = tuple(int(v) for v in rng.integers(8, SIZE - 8, 2)) if label else None
    if label:
      x += _blob(centre)
    images.append(x)
    centres.append(centre)
  return np.stack(images), labels, centres


def test_blob_response_peaks_at_a_bright_blob():
  response = finding_search.blob_response(_blob((12, 20))[None], sigma=1.5)[0]
  assert np.unravel_index(response.argmax(), response.shape) == (12, 20)
  assert response[12, 20] > 0 > finding_search.blob_response(-_blob((12, 20))[None], 1.5)[0, 12, 20]


def test_known_location_scores_read_each_place_by_hand():
  response = np.arange(4 * 3 * 3, dtype=np.float64).reshape(4, 3, 3)
  labels = np.array([1, 0, 1, 0])
  centres = [(0, 1), None, (2, 2), None]
  y, s = finding_search.known_location_scores(response, labels, centres, seed=0)
  places = np.random.default_rng(0).choice(2, size=2)
  chosen = [centres[(0, 2)[p]] for p in places]
  assert y.tolist() == [1, 1, 0, 0]
  assert s.tolist() == [response[0, 0, 1], response[2, 2, 2],
                        response[1][chosen[0]], response[3][chosen[1]]]
  with pytest.raises(ValueError, match="positives with a box"):
    finding_search.known_location_scores(response, labels, [None] * 4)


def test_search_scores_leave_out_the_border():
  response = np.zeros((2, 10, 10))
  response[0, 0, 0] = 9.0  # on the border: not searched
  response[0, 5, 4] = 2.0
  response[1, 7, 7] = 3.0
  assert finding_search.search_scores(response, border=2).tolist() == [2.0, 3.0]
  with pytest.raises(ValueError, match="leaves nothing"):
    finding_search.search_scores(response, border=5)


def test_clutter_hides_the_blob_from_search_not_from_the_known_location():
  """Alone in noise a blob is found both ways; among two look-alikes per image, only where it
  is. The AUCs equal scikit-learn's on the same scores."""
  for clutter, search_range in ((0, (0.95, 1.0)), (2, (0.35, 0.7))):
    images, labels, centres = _images(clutter)
    (row,) = finding_search.study(images, labels, centres, [1.5])
    assert row["known_location"]["auc"] > 0.95, clutter
    assert search_range[0] <= row["search"]["auc"] <= search_range[1], (clutter, row)
    response = finding_search.blob_response(images, 1.5)
    search = finding_search.search_scores(response, border=5)
    assert row["search"]["auc"] == pytest.approx(roc_auc_score(labels, search))
    y, s = finding_search.known_location_scores(response, labels, centres)
    assert row["known_location"]["auc"] == pytest.approx(roc_auc_score(y, s))
    for key in ("known_location", "search"):
      assert row[key]["low"] <= row[key]["auc"] <= row[key]["high"]


def test_box_centres_are_the_first_box_of_the_class_in_pixels():
  boxes = [np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.25, 1.0, 0.75]]), np.zeros((0, 4))]
  box_labels = [np.array([2, 4]), np.zeros((0,))]
  assert finding_search.box_centres(boxes, box_labels, 4, 32) == [(24, 16), None]
  assert finding_search.box_centres(boxes, box_labels, 2, 32) == [(8, 8), None]


def test_report_table_plot_and_json(tmp_path, monkeypatch):
  images, labels, centres = _images(0, n=40)
  boxes = [np.array([[(c[0] - 2) / SIZE, (c[1] - 2) / SIZE, (c[0] + 2) / SIZE, (c[1] + 2) / SIZE]])
           if c else np.zeros((0, 4)) for c in centres]
  box_labels = [np.array([1]) if c else np.zeros((0,)) for c in centres]
  monkeypatch.setattr(finding_search, "read_split", lambda data_dir, split: (
      images, np.stack([1 - labels, labels], 1), boxes, box_labels, ("normal", "nodule")))
  path = finding_search.run(str(tmp_path), findings=["nodule"], sigmas=[1.5, 2.0])
  results = json.loads((tmp_path / "results.json").read_text())
  rows = [line for line in path.read_text().splitlines() if line.startswith("| nodule")]
  assert [r["sigma"] for r in results["nodule"]] == [1.5, 2.0] and len(rows) == 2
  first = results["nodule"][0]["known_location"]
  assert f"{first['auc']:.3f} [{first['low']:.3f}, {first['high']:.3f}]" in rows[0]
  assert (tmp_path / "auc_by_sigma.png").read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match="not classes"):
    finding_search.run(str(tmp_path), findings=["mass"], sigmas=[1.0])
