"""NIH ChestX-ray14: 112,120 frontal radiographs of 30,805 patients, 14 findings, 984 boxes."""

from __future__ import annotations

import collections
import pathlib

import numpy as np

from tfds_builders import cxr_base
from tfds_builders.cxr_base import splits
# Relative: TFDS's build command (`python -m otcxr_jax.data.build tfds_builders/nih_chest_xray14`)
# imports this package as `nih_chest_xray14`.
from . import annotations as nih

CLASS_NAMES = nih.CLASS_NAMES
VALIDATION_FRACTION = 0.10  # of the official train_val patients

_INSTRUCTIONS = """\
NIH ChestX-ray14 cannot be downloaded by a program. Download it by hand from
https://nihcc.app.box.com/v/ChestXray-NIHCC (the 12 archives images_001.tar.gz ...
images_012.tar.gz and the files Data_Entry_2017_v2020.csv, BBox_List_2017.csv,
train_val_list.txt, test_list.txt) or from the Kaggle mirror
https://www.kaggle.com/datasets/nih-chest-xrays/data, and extract everything into the manual
directory, in either layout:

  <manual_dir>/Data_Entry_2017_v2020.csv   (or the older Data_Entry_2017.csv)
  <manual_dir>/BBox_List_2017.csv
  <manual_dir>/train_val_list.txt
  <manual_dir>/test_list.txt
  <manual_dir>/images/00000001_000.png ...                  (official archives)
  <manual_dir>/images_001/images/00000001_000.png ...       (Kaggle: images_001 ... images_012)

Files are found by name anywhere below the manual directory (PNG or JPEG copies that keep the
file stem are accepted); keep a single copy of each image.
"""


class Builder(cxr_base.CxrBuilder):
  """NIH ChestX-ray14 at 224, 256 or 512 pixels, official test split (see docs/datasets.md)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  CLASS_NAMES = CLASS_NAMES
  EXPECTED_COUNTS = nih.EXPECTED_COUNTS
  DESCRIPTION = (
      "NIH ChestX-ray14: 112,120 frontal chest radiographs (PA/AP) of 30,805 patients with 14 "
      "text-mined findings (multi-hot; 'No Finding' is all zeros) and 984 radiologist boxes on "
      "880 images. Splits: the official test list; validation holds 10% of the official "
      "train_val patients (seeded), train the rest; train_1pct and train_10pct are nested "
      "patient-level subsets of train.")
  HOMEPAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
  CITATION = """\
@inproceedings{wang2017chestxray,
  title={ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised
         Classification and Localization of Common Thorax Diseases},
  author={Wang, Xiaosong and Peng, Yifan and Lu, Le and Lu, Zhiyong and Bagheri, Mohammadhadi
          and Summers, Ronald M.},
  booktitle={CVPR},
  year={2017}
}"""
  SPLIT_NOTE = ("Official test list; validation: a seeded 10% of the official train_val "
                "patients; train: the other train_val patients.")

  def _read_annotations(self, files: cxr_base.FileIndex) -> cxr_base.Annotations:
    entry_path = files.find(nih.DATA_ENTRY_FILES)
    entries = nih.parse_data_entry(entry_path)
    boxes = nih.parse_bbox_list(files.find([nih.BBOX_FILE]))
    train_val = cxr_base.read_id_list(files.find([nih.TRAIN_VAL_LIST]))
    test = cxr_base.read_id_list(files.find([nih.TEST_LIST]))
    _check_lists(entries, boxes, train_val, test)

    boxes_of = collections.defaultdict(list)
    for box in boxes:
      boxes_of[box.file_name].append(box)
    found = files.images(extensions=(".png", ".jpg", ".jpeg"))
    records, missing = [], []
    for name, entry in entries.items():
      stem = pathlib.Path(name).stem
      if stem not in found:
        missing.append(stem)
        continue
      image_boxes = boxes_of.get(name, [])
      records.append(cxr_base.Record(
          image_id=stem, patient_id=entry.patient_id, path=found[stem],
          labels=cxr_base.multi_hot(entry.findings, CLASS_NAMES), view=entry.view,
          boxes=np.array([[b.y, b.x, b.y + b.height, b.x + b.width] for b in image_boxes],
                         np.float32).reshape(-1, 4),
          box_labels=np.array([CLASS_NAMES.index(b.finding) for b in image_boxes], np.int64),
          frame=nih.IMAGE_SIZE))

    present = {r.image_id: r.patient_id for r in records}
    train_val_present = {i: present[i] for i in map(_stem, train_val) if i in present}
    carved = splits.split_patients(
        splits.group_by_patient(train_val_present),
        {"train": 1 - VALIDATION_FRACTION, "validation": VALIDATION_FRACTION})
    official = {**carved, "test": sorted(i for i in map(_stem, test) if i in present)}
    warnings = []
    if entry_path.name != nih.DATA_ENTRY_FILES[0]:
      warnings.append(f"read {entry_path.name}; {nih.DATA_ENTRY_FILES[0]} corrects it "
                      "(e.g. ages above 100)")
    unlisted = len(entries) - len(train_val) - len(test)
    if unlisted:
      warnings.append(f"{unlisted} images of {entry_path.name} are in neither split list and "
                      "are left out")
    return cxr_base.Annotations(
        records=records, missing=missing, counts=nih.counts(entries, boxes, train_val, test),
        splits=official, warnings=warnings)


def _stem(file_name: str) -> str:
  return pathlib.Path(file_name).stem


def _check_lists(entries, boxes, train_val, test) -> None:
  """The split lists and box list may only name images of the data-entry file, each once."""
  for list_name, names in ((nih.TRAIN_VAL_LIST, train_val), (nih.TEST_LIST, test)):
    duplicates = [n for n, c in collections.Counter(names).items() if c > 1]
    if duplicates:
      raise ValueError(f"{list_name} lists {duplicates[:5]} more than once")
    unknown = [n for n in names if n not in entries]
    if unknown:
      raise ValueError(f"{list_name} lists {len(unknown)} images absent from the data-entry "
                       f"CSV, e.g. {unknown[:5]}")
  both = sorted(set(train_val) & set(test))
  if both:
    raise ValueError(f"{len(both)} images are in both {nih.TRAIN_VAL_LIST} and "
                     f"{nih.TEST_LIST}, e.g. {both[:5]}")
  unknown = sorted({b.file_name for b in boxes} - set(entries))
  if unknown:
    raise ValueError(f"{nih.BBOX_FILE} boxes images absent from the data-entry CSV, e.g. "
                     f"{unknown[:5]}")
