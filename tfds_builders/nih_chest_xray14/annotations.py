"""NIH ChestX-ray14 annotation files: ``Data_Entry_2017[_v2020].csv``, ``BBox_List_2017.csv``,
``train_val_list.txt`` and ``test_list.txt`` (Wang et al., CVPR 2017)."""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import Any, Mapping, Sequence

from tfds_builders.cxr_base import tables

CLASS_NAMES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
               "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
               "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
BOX_CLASS_ALIASES = {"Infiltrate": "Infiltration"}  # BBox_List_2017.csv's spelling

DATA_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # in order of preference
DATA_ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                      "Patient Gender", "View Position", "OriginalImage[Width,Height]",
                      "OriginalImagePixelSpacing[x,y]")
BBOX_FILE = "BBox_List_2017.csv"
BBOX_COLUMNS = ("Image Index", "Finding Label", "Bbox [x,y,w,h]")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
IMAGE_SIZE = (1024, 1024)  # every released PNG; the boxes' pixel grid

# The official release (docs/datasets.md).
EXPECTED_COUNTS: dict[str, Any] = {
    "images": 112_120,
    "patients": 30_805,
    "views": {"PA": 67_310, "AP": 44_810},
    "class_counts": {
        NO_FINDING: 60_361, "Infiltration": 19_894, "Effusion": 13_317, "Atelectasis": 11_559,
        "Nodule": 6_331, "Mass": 5_782, "Pneumothorax": 5_302, "Consolidation": 4_667,
        "Pleural_Thickening": 3_385, "Cardiomegaly": 2_776, "Emphysema": 2_516, "Edema": 2_303,
        "Fibrosis": 1_686, "Pneumonia": 1_431, "Hernia": 227},
    "boxes": 984,
    "box_images": 880,
    "box_classes": 8,
    "train_val_images": 86_524,
    "test_images": 25_596,
}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One row of the data-entry CSV."""

  file_name: str
  findings: tuple[str, ...]  # CLASS_NAMES members; empty for "No Finding"
  patient_id: str
  view: str


@dataclasses.dataclass(frozen=True)
class Box:
  """One row of the box list: a class and a pixel box in the 1024x1024 image."""

  file_name: str
  finding: str
  x: float
  y: float
  width: float
  height: float


def parse_data_entry(path: pathlib.Path) -> dict[str, Entry]:
  """``{Image Index: Entry}``; raises ValueError on duplicate images or unknown labels."""
  entries: dict[str, Entry] = {}
  for line, row in enumerate(tables.read_table(path, DATA_ENTRY_COLUMNS), start=2):
    name = row["Image Index"]
    if name in entries:
      raise ValueError(f"{path}:{line}: duplicate image id {name!r}")
    labels = tuple(label.strip() for label in row["Finding Labels"].split("|"))
    if labels == (NO_FINDING,):
      labels = ()
    else:
      unknown = [label for label in labels if label not in CLASS_NAMES]
      if unknown:
        raise ValueError(f"{path}:{line}: unknown finding(s) {unknown} for {name}; expected "
                         f"{NO_FINDING!r} alone or '|'-separated names from {list(CLASS_NAMES)}")
    entries[name] = Entry(name, labels, row["Patient ID"], row["View Position"])
  return entries


def parse_bbox_list(path: pathlib.Path) -> list[Box]:
  """Rows of the box list, with ``Infiltrate`` read as ``Infiltration``."""
  boxes = []
  for line, row in enumerate(tables.read_table(path, BBOX_COLUMNS), start=2):
    finding = BOX_CLASS_ALIASES.get(row["Finding Label"], row["Finding Label"])
    if finding not in CLASS_NAMES:
      raise ValueError(f"{path}:{line}: unknown box class {row['Finding Label']!r}")
    try:
      x, y, w, h = (float(v) for v in row["Bbox [x,y,w,h]"].split(","))
    except ValueError:
      raise ValueError(f"{path}:{line}: expected four numbers x,y,w,h, got "
                       f"{row['Bbox [x,y,w,h]']!r}") from None
    boxes.append(Box(row["Image Index"], finding, x, y, w, h))
  return boxes


def counts(entries: Mapping[str, Entry], boxes: Sequence[Box], train_val: Sequence[str],
           test: Sequence[str]) -> dict[str, Any]:
  """The counts of ``EXPECTED_COUNTS`` as the parsed files give them."""
  class_counts = collections.Counter(
      label for entry in entries.values() for label in (entry.findings or (NO_FINDING,)))
  return {
      "images": len(entries),
      "patients": len({e.patient_id for e in entries.values()}),
      "views": dict(collections.Counter(e.view for e in entries.values())),
      "class_counts": {name: class_counts[name] for name in (NO_FINDING, *CLASS_NAMES)},
      "boxes": len(boxes),
      "box_images": len({b.file_name for b in boxes}),
      "box_classes": len({b.finding for b in boxes}),
      "train_val_images": len(train_val),
      "test_images": len(test),
  }
