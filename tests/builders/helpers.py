"""Building a fixture dataset and checking what it holds against the fixture's ground truth."""

from __future__ import annotations

import importlib
import math
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from builders.layouts import Truth

RESOLUTION = 32
MAIN_SPLITS = ("train", "validation", "test")
CORNER = 8  # side of the corner patches compared with the quadrant levels
LEVEL_TOLERANCE = 3  # 8-bit levels: rounding, 16->8 bit conversion and JPEG


def build(name: str, manual: pathlib.Path, data_dir: pathlib.Path,
          resolution: int = RESOLUTION) -> tfds.core.DatasetBuilder:
  module = importlib.import_module(f"tfds_builders.{name}")
  builder = module.Builder(config=module.Builder.config_for(resolution), data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def read_all(builder) -> dict[str, dict[str, dict[str, Any]]]:
  """``{split: {image_id: example}}`` through the TensorFlow-free data source."""
  out = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    examples = [source[i] for i in range(len(source))]
    out[split] = {e["image_id"].decode(): e for e in examples}
    assert len(out[split]) == len(examples), f"{split} holds an image twice"
  return out


def corner_levels(image: np.ndarray) -> np.ndarray:
  """Mean of the top-left, top-right, bottom-left, bottom-right corner patches."""
  image = np.asarray(image, np.float64)[..., 0]
  c = CORNER
  return np.array([image[:c, :c].mean(), image[:c, -c:].mean(), image[-c:, :c].mean(),
                   image[-c:, -c:].mean()])


def check_examples(examples: dict[str, dict[str, Any]], truth: Truth, *, boxes: bool,
                   mask: bool, extras: tuple[str, ...] = ()) -> None:
  """Every example matches the ground truth of its image."""
  for image_id, ex in examples.items():
    assert ex["image"].shape == (RESOLUTION, RESOLUTION, 1) and ex["image"].dtype == np.uint8
    np.testing.assert_array_equal(ex["labels"], truth.labels[image_id], err_msg=image_id)
    assert ex["labels"].dtype == np.float32
    assert ex["patient_id"].decode() == truth.patient[image_id]
    assert ex["view"].decode() == truth.view[image_id]
    assert tuple(ex["original_size"]) == truth.original_size[image_id]
    np.testing.assert_allclose(corner_levels(ex["image"]), truth.levels[image_id],
                               atol=LEVEL_TOLERANCE, err_msg=image_id)
    if boxes:  # in any order; with their readers where the dataset has several
      readers = "box_readers" in extras
      np.testing.assert_allclose(
          _box_rows(ex["boxes"], ex["box_labels"], ex["box_readers"] if readers else None),
          _box_rows(truth.boxes[image_id], truth.box_labels[image_id],
                    truth.extras[image_id]["box_readers"] if readers else None),
          atol=1e-5, err_msg=image_id)
    else:
      assert "boxes" not in ex and "box_labels" not in ex
    if mask:
      # Masks are unions of 32-pixel blocks of the 1024 grid: one output pixel per block.
      block = truth.masks[image_id].shape[0] // RESOLUTION
      expected = truth.masks[image_id][::block, ::block].astype(np.uint8)
      np.testing.assert_array_equal(ex["mask"][..., 0], expected, err_msg=image_id)
    else:
      assert "mask" not in ex
    for key in extras:
      if key != "box_readers":
        np.testing.assert_array_equal(ex[key], truth.extras[image_id][key], err_msg=key)


def _box_rows(boxes, labels, readers=None) -> np.ndarray:
  """``[label, ymin, xmin, ymax, xmax(, reader)]`` rows in lexicographic order."""
  columns = [np.asarray(labels, np.float64)[:, None], np.asarray(boxes, np.float64).reshape(-1, 4)]
  if readers is not None:
    columns.append(np.asarray(readers, np.float64)[:, None])
  rows = np.concatenate(columns, axis=1)
  return rows[np.lexsort(rows.T[::-1])]


def check_splits(data: dict[str, dict[str, Any]], truth: Truth, *,
                 official_test: list[str] | None = None, validation_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> None:
  """Patient-disjoint train/validation/test covering every image; nested patient fractions."""
  ids = {split: set(examples) for split, examples in data.items()}
  assert set(ids) == {*MAIN_SPLITS, "train_1pct", "train_10pct"}
  assert set().union(*(ids[s] for s in MAIN_SPLITS)) == set(truth.labels)
  patients = {s: {truth.patient[i] for i in ids[s]} for s in ids}
  for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
    assert not ids[a] & ids[b] and not patients[a] & patients[b], (a, b)
  images_of: dict[str, set[str]] = {}
  for image_id, patient in truth.patient.items():
    images_of.setdefault(patient, set()).add(image_id)
  round_half_up = lambda x: math.floor(x + 0.5)  # noqa: E731
  if official_test is None:
    n = len(images_of)
    assert len(patients["test"]) == round_half_up(test_fraction * n)
    pool = n
  else:
    assert ids["test"] == set(official_test)
    pool = len(patients["train"]) + len(patients["validation"])
  assert len(patients["validation"]) == round_half_up(validation_fraction * pool)
  assert ids["train_1pct"] < ids["train_10pct"] < ids["train"]
  for split, fraction in (("train_1pct", 0.01), ("train_10pct", 0.10)):
    assert len(patients[split]) == max(1, round_half_up(fraction * len(patients["train"])))
    for patient in patients[split]:
      assert images_of[patient] <= ids[split]  # whole patients
    for image_id in ids[split]:  # the same examples as in train
      np.testing.assert_array_equal(data[split][image_id]["image"],
                                    data["train"][image_id]["image"])


def check_report(builder, data: dict[str, dict[str, Any]]) -> None:
  """build_report.json beside the data agrees with what the splits hold; nothing was lost."""
  from tfds_builders.cxr_base import BuildReport
  report = BuildReport.read(pathlib.Path(builder.data_dir))
  class_names = list(builder.info.metadata["class_names"])
  assert report.class_names == class_names
  assert (report.skipped, report.missing) == ([], [])
  assert set(report.splits) == set(data)
  for split, examples in data.items():
    counts = report.splits[split]
    assert counts.images == len(examples) == builder.info.splits[split].num_examples
    assert counts.patients == len({e["patient_id"] for e in examples.values()})
    assert counts.boxes == sum(len(e.get("boxes", ())) for e in examples.values())
    labels = np.sum([e["labels"] for e in examples.values()], axis=0)
    assert counts.class_counts == {n: int(v) for n, v in zip(class_names, labels)}
  assert builder.info.metadata["build_report"]["images"] == {s: len(e) for s, e in data.items()}
