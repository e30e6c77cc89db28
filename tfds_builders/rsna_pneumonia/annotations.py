"""RSNA Pneumonia Detection Challenge (stage 2) annotation files.

``stage_2_train_labels.csv`` has one row per box of a positive image (``Target`` 1) and one row
without a box per negative image; ``stage_2_detailed_class_info.csv`` repeats each row's patient
with its class: Normal, No Lung Opacity / Not Normal, or Lung Opacity (exactly the positives).
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
from typing import Any, Mapping

from tfds_builders.cxr_base import tables

CLASS_NAMES = ("Pneumonia",)  # Target 1: lung opacity suggestive of pneumonia
CLASS_INFO_NAMES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
POSITIVE_CLASS_INFO = "Lung Opacity"

LABELS_CSV = "stage_2_train_labels.csv"
LABELS_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_INFO_CSV = "stage_2_detailed_class_info.csv"
CLASS_INFO_COLUMNS = ("patientId", "class")
IMAGE_SIZE = (1024, 1024)  # every released DICOM; the boxes' pixel grid

# The official release (docs/datasets.md).
EXPECTED_COUNTS: dict[str, Any] = {
    "rows": 30_227,
    "images": 26_684,
    "positive_images": 6_012,
    "boxes": 9_555,
    "max_boxes_per_image": 4,
}


@dataclasses.dataclass
class PatientLabels:
  """Target and pixel boxes ``(ymin, xmin, ymax, xmax)`` of one image (one patient id)."""

  target: int
  boxes: list[tuple[float, float, float, float]] = dataclasses.field(default_factory=list)


def parse_labels(path: pathlib.Path) -> tuple[dict[str, PatientLabels], int]:
  """``({patientId: PatientLabels}, number of rows)``; raises ValueError on conflicting rows."""
  out: dict[str, PatientLabels] = {}
  rows = tables.read_table(path, LABELS_COLUMNS)
  for line, row in enumerate(rows, start=2):
    target = row["Target"]
    if target not in ("0", "1"):
      raise ValueError(f"{path}:{line}: Target must be 0 or 1, got {target!r}")
    labels = out.setdefault(row["patientId"], PatientLabels(int(target)))
    if labels.target != int(target):
      raise ValueError(f"{path}:{line}: patient {row['patientId']} has rows with Target 0 and 1")
    if target == "1":
      try:
        x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
      except ValueError:
        raise ValueError(
            f"{path}:{line}: a Target 1 row needs numeric x, y, width, height") from None
      labels.boxes.append((y, x, y + h, x + w))
  return out, len(rows)


def parse_class_info(path: pathlib.Path) -> dict[str, int]:
  """``{patientId: index into CLASS_INFO_NAMES}``; raises ValueError on unknown or mixed classes."""
  canonical = {_squash(name): i for i, name in enumerate(CLASS_INFO_NAMES)}
  out: dict[str, int] = {}
  for line, row in enumerate(tables.read_table(path, CLASS_INFO_COLUMNS), start=2):
    index = canonical.get(_squash(row["class"]))
    if index is None:
      raise ValueError(f"{path}:{line}: unknown class {row['class']!r}; expected one of "
                       f"{list(CLASS_INFO_NAMES)}")
    if out.setdefault(row["patientId"], index) != index:
      raise ValueError(f"{path}:{line}: patient {row['patientId']} has two classes")
  return out


def counts(labels: Mapping[str, PatientLabels], rows: int) -> dict[str, Any]:
  """The counts of ``EXPECTED_COUNTS`` as the parsed files give them."""
  boxes = [len(p.boxes) for p in labels.values()]
  return {
      "rows": rows,
      "images": len(labels),
      "positive_images": sum(p.target for p in labels.values()),
      "boxes": sum(boxes),
      "max_boxes_per_image": max(boxes, default=0),
      "boxes_per_positive_image": dict(sorted(collections.Counter(
          str(len(p.boxes)) for p in labels.values() if p.target).items())),
  }


def _squash(name: str) -> str:
  return re.sub(r"\s+", " ", re.sub(r"\s*/\s*", "/", name.strip()))
