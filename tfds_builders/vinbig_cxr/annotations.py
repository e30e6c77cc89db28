"""VinBig-CXR (VinDr-CXR, Kaggle release) ``train.csv``: three readers per image, 14 findings.

Each of an image's readers (``rad_id``) writes either one "No finding" row (``class_id`` 14, no
box) or one row per box. Image-level labels: ``union`` (a finding any reader marked) and
``majority`` (a finding at least two readers marked).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from tfds_builders.cxr_base import tables

CLASS_NAMES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly",
               "Consolidation", "ILD", "Infiltration", "Lung Opacity", "Nodule/Mass",
               "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
               "Pulmonary fibrosis")
NO_FINDING = "No finding"
NO_FINDING_ID = 14
MAJORITY = 2  # readers out of three

TRAIN_CSV = "train.csv"
TRAIN_COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max",
                 "y_max")
SIZE_COLUMNS = ("image_id", "dim0", "dim1")  # resized variants' table of original sizes

# The official release (docs/datasets.md).
EXPECTED_COUNTS: dict[str, Any] = {
    "rows": 67_914,
    "images": 15_000,
    "readers_per_image": {"3": 15_000},
    "radiologists": 17,
    "no_finding_all_readers": 10_606,
    "union_counts": {"Aortic enlargement": 3_067, "Atelectasis": 186, "Pneumothorax": 96,
                     "Other lesion": 1_134},
    "majority_counts": {"Aortic enlargement": 2_346, "Atelectasis": 62, "Pneumothorax": 58,
                        "Other lesion": 362},
}


@dataclasses.dataclass
class ImageAnnotation:
  """All readers' rows for one image; boxes in DICOM pixels ``(ymin, xmin, ymax, xmax)``."""

  readers: dict[str, set[int]] = dataclasses.field(default_factory=dict)
  boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)
  box_labels: list[int] = dataclasses.field(default_factory=list)
  box_readers: list[int] = dataclasses.field(default_factory=list)

  def union(self) -> np.ndarray:
    return self._labels(1)

  def majority(self) -> np.ndarray:
    return self._labels(MAJORITY)

  def _labels(self, min_readers: int) -> np.ndarray:
    votes = collections.Counter(c for classes in self.readers.values() for c in classes)
    return np.array([votes[c] >= min_readers for c in range(len(CLASS_NAMES))], np.float32)


def parse_train_csv(path: pathlib.Path) -> tuple[dict[str, ImageAnnotation], int]:
  """``({image_id: ImageAnnotation}, number of rows)``; raises ValueError on malformed rows."""
  images: dict[str, ImageAnnotation] = collections.defaultdict(ImageAnnotation)
  rows = tables.read_table(path, TRAIN_COLUMNS)
  for line, row in enumerate(rows, start=2):
    try:
      class_id = int(row["class_id"])
    except ValueError:
      raise ValueError(f"{path}:{line}: class_id {row['class_id']!r} is not an integer") from None
    name = NO_FINDING if class_id == NO_FINDING_ID else (
        CLASS_NAMES[class_id] if 0 <= class_id < len(CLASS_NAMES) else None)
    if name != row["class_name"]:
      raise ValueError(f"{path}:{line}: class_id {class_id} with class_name "
                       f"{row['class_name']!r}; expected ids 0-13 for {list(CLASS_NAMES)} and "
                       f"{NO_FINDING_ID} for {NO_FINDING!r}")
    rad_id = row["rad_id"]
    if not (rad_id[:1] == "R" and rad_id[1:].isdigit()):
      raise ValueError(f"{path}:{line}: rad_id {rad_id!r} is not of the form R<number>")
    image = images[row["image_id"]]
    classes = image.readers.setdefault(rad_id, set())
    if class_id == NO_FINDING_ID:
      continue
    classes.add(class_id)
    try:
      x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
    except ValueError:
      raise ValueError(f"{path}:{line}: a {name!r} row needs numeric x_min, y_min, x_max, "
                       "y_max") from None
    if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 < x0 or y1 < y0:
      raise ValueError(f"{path}:{line}: invalid box {(x0, y0, x1, y1)}")
    image.boxes.append((y0, x0, y1, x1))
    image.box_labels.append(class_id)
    image.box_readers.append(int(rad_id[1:]))
  return dict(images), len(rows)


def parse_size_tables(paths: Sequence[pathlib.Path]) -> dict[str, tuple[int, int]]:
  """``{image_id: (height, width)}`` of the original DICOMs from resized variants' tables."""
  sizes: dict[str, tuple[int, int]] = {}
  for path in paths:
    for line, row in enumerate(tables.read_table(path, SIZE_COLUMNS), start=2):
      try:
        size = (int(float(row["dim0"])), int(float(row["dim1"])))
      except ValueError:
        raise ValueError(f"{path}:{line}: dim0, dim1 must be integers") from None
      if sizes.setdefault(row["image_id"], size) != size:
        raise ValueError(f"{path}:{line}: duplicate image id {row['image_id']!r} with another size")
  return sizes


def counts(images: Mapping[str, ImageAnnotation], rows: int) -> dict[str, Any]:
  """The counts of ``EXPECTED_COUNTS`` as the parsed file gives them."""
  union = sum(a.union() for a in images.values()) if images else np.zeros(len(CLASS_NAMES))
  majority = sum(a.majority() for a in images.values()) if images else np.zeros(len(CLASS_NAMES))
  return {
      "rows": rows,
      "images": len(images),
      "readers_per_image": {str(k): v for k, v in sorted(collections.Counter(
          len(a.readers) for a in images.values()).items())},
      "radiologists": len({r for a in images.values() for r in a.readers}),
      "no_finding_all_readers": sum(not a.boxes for a in images.values()),
      "union_counts": {n: int(c) for n, c in zip(CLASS_NAMES, union)},
      "majority_counts": {n: int(c) for n, c in zip(CLASS_NAMES, majority)},
  }
