"""RSNA Pneumonia Detection Challenge: 26,684 labelled radiographs, 6,012 with opacity boxes."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import cxr_base

# Relative: TFDS's build command (`python -m otcxr_jax.data.build tfds_builders/rsna_pneumonia`)
# imports this package as `rsna_pneumonia`.
from . import annotations as rsna

CLASS_NAMES = rsna.CLASS_NAMES

_INSTRUCTIONS = """\
The RSNA Pneumonia Detection Challenge data cannot be downloaded by a program. Download the
Kaggle competition data "rsna-pneumonia-detection-challenge"
(https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge/data) by hand and extract
it into the manual directory:

  <manual_dir>/stage_2_train_labels.csv
  <manual_dir>/stage_2_detailed_class_info.csv
  <manual_dir>/stage_2_train_images/<patientId>.dcm   (26,684 labelled images)
  <manual_dir>/stage_2_test_images/<patientId>.dcm    (3,000 unlabelled images; not used)

Converted variants with <patientId>.png or <patientId>.jpg files are accepted in place of the
DICOMs (boxes stay in the 1024-pixel grid of the release). Files are found by name anywhere below
the manual directory.
"""


class Builder(cxr_base.CxrBuilder):
  """RSNA Pneumonia at 224, 256 or 512 pixels, seeded 70/15/15 split (see docs/datasets.md)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  CLASS_NAMES = CLASS_NAMES
  EXPECTED_COUNTS = rsna.EXPECTED_COUNTS
  DESCRIPTION = (
      "RSNA Pneumonia Detection Challenge (stage 2 training set): 26,684 chest radiographs, one "
      "per patient id; `labels` is Target (lung opacity suggestive of pneumonia), `boxes` the "
      "opacity boxes, `class_info` the three-way class (Normal, No Lung Opacity / Not Normal, "
      "Lung Opacity). Seeded patient-disjoint 70/15/15 split.")
  HOMEPAGE = "https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge"
  CITATION = """\
@article{shih2019augmenting,
  title={Augmenting the National Institutes of Health Chest Radiograph Dataset with Expert
         Annotations of Possible Pneumonia},
  author={Shih, George and Wu, Carol C. and Halabi, Safwan S. and others},
  journal={Radiology: Artificial Intelligence},
  volume={1},
  number={1},
  year={2019}
}"""

  def _extra_features(self):
    return {"class_info": tfds.features.ClassLabel(names=rsna.CLASS_INFO_NAMES)}

  def _read_annotations(self, files: cxr_base.FileIndex) -> cxr_base.Annotations:
    labels, rows = rsna.parse_labels(files.find([rsna.LABELS_CSV]))
    class_info = rsna.parse_class_info(files.find([rsna.CLASS_INFO_CSV]))
    _check_consistent(labels, class_info)
    found = files.images()
    records, missing = [], []
    for patient_id, patient in sorted(labels.items()):
      path = found.get(patient_id)
      if path is None:
        missing.append(patient_id)
        continue
      records.append(cxr_base.Record(
          image_id=patient_id, patient_id=patient_id, path=path,
          labels=np.array([patient.target], np.float32),
          boxes=np.array(patient.boxes, np.float32).reshape(-1, 4),
          box_labels=np.zeros(len(patient.boxes), np.int64), frame=rsna.IMAGE_SIZE,
          features={"class_info": class_info[patient_id]}))
    return cxr_base.Annotations(records=records, missing=missing,
                                counts=rsna.counts(labels, rows))


def _check_consistent(labels, class_info) -> None:
  """Both CSVs must name the same patients, and Lung Opacity exactly the Target 1 images."""
  if set(labels) != set(class_info):
    only = sorted(set(labels) ^ set(class_info))
    raise ValueError(f"{rsna.LABELS_CSV} and {rsna.CLASS_INFO_CSV} differ in {len(only)} "
                     f"patient ids, e.g. {only[:5]}")
  positive = rsna.CLASS_INFO_NAMES.index(rsna.POSITIVE_CLASS_INFO)
  conflicts = sorted(p for p, lab in labels.items() if lab.target != (class_info[p] == positive))
  if conflicts:
    raise ValueError(f"{len(conflicts)} patients have Target and class disagreeing "
                     f"(Target 1 must be exactly '{rsna.POSITIVE_CLASS_INFO}'), e.g. "
                     f"{conflicts[:5]}")
