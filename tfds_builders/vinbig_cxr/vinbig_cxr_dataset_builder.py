"""VinBig-CXR (VinDr-CXR): 15,000 labelled radiographs, 14 findings boxed by three readers each."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tfds_builders import cxr_base
from tfds_builders.cxr_base import images

# Relative: TFDS's build command (`python -m otcxr_jax.data.build tfds_builders/vinbig_cxr`)
# imports this package as `vinbig_cxr`.
from . import annotations as vinbig

CLASS_NAMES = vinbig.CLASS_NAMES
_BOX_TOLERANCE = 1.0  # pixels a box may exceed its image by

_INSTRUCTIONS = """\
VinBig-CXR cannot be downloaded by a program. Download the Kaggle competition data
"vinbigdata-chest-xray-abnormalities-detection"
(https://www.kaggle.com/competitions/vinbigdata-chest-xray-abnormalities-detection/data) by hand
and extract it into the manual directory:

  <manual_dir>/train.csv
  <manual_dir>/train/<image_id>.dicom      (15,000 labelled images)
  <manual_dir>/test/<image_id>.dicom       (3,000 unlabelled images; not used)

Resized PNG/JPEG variants that keep the image_id file stem are accepted in place of the DICOMs;
put the variant's table of original sizes (a CSV with columns image_id, dim0, dim1, e.g.
train_meta.csv) in the manual directory as well, since the boxes of train.csv are in original
DICOM pixels. Files are found by name anywhere below the manual directory.
"""


class Builder(cxr_base.CxrBuilder):
  """VinBig-CXR at 224, 256 or 512 pixels; union labels by default (see docs/datasets.md)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  CLASS_NAMES = CLASS_NAMES
  EXPECTED_COUNTS = vinbig.EXPECTED_COUNTS
  DESCRIPTION = (
      "VinBig-CXR (VinDr-CXR, Kaggle release): the 15,000 labelled chest radiographs, each read "
      "by 3 of 17 radiologists, 14 findings with boxes ('No finding' is all zeros). `labels` "
      "is the union over readers (a finding any reader marked); `labels_majority` needs 2 of 3 "
      "readers. `boxes` holds every reader's boxes, `box_readers` the reader numbers (R<n>). "
      "No patient ids are given: each image is its own unit in the seeded 70/15/15 split.")
  HOMEPAGE = "https://vindr.ai/datasets/cxr"
  CITATION = """\
@article{nguyen2022vindr,
  title={VinDr-CXR: An open dataset of chest X-rays with radiologist's annotations},
  author={Nguyen, Ha Q. and Lam, Khanh and Le, Linh T. and others},
  journal={Scientific Data},
  volume={9},
  pages={429},
  year={2022}
}"""
  SPLIT_NOTE = ("Seeded 70/15/15 split of the images (no patient ids are given, so each image is "
                "its own unit).")

  def _extra_features(self):
    return {
        "labels_majority": tfds.features.Tensor(shape=(len(CLASS_NAMES),), dtype=np.float32),
        "box_readers": tfds.features.Tensor(shape=(None,), dtype=np.int64),
    }

  def _read_annotations(self, files: cxr_base.FileIndex) -> cxr_base.Annotations:
    parsed, rows = vinbig.parse_train_csv(files.find([vinbig.TRAIN_CSV]))
    sizes = vinbig.parse_size_tables(files.csv_files_with_columns(vinbig.SIZE_COLUMNS))
    found = files.images()
    records, missing = [], []
    for image_id, ann in sorted(parsed.items()):
      path = found.get(image_id)
      if path is None:
        missing.append(image_id)
        continue
      converted = path.suffix.lower() not in images.DICOM_SUFFIXES
      boxes = np.array(ann.boxes, np.float32).reshape(-1, 4)
      frame = sizes.get(image_id) if converted else None
      if converted and frame is None and len(boxes):
        _check_boxes_fit(files, image_id, path, boxes)
      records.append(cxr_base.Record(
          image_id=image_id, patient_id=image_id, path=path, labels=ann.union(), boxes=boxes,
          box_labels=np.array(ann.box_labels, np.int64), frame=frame,
          features={"labels_majority": ann.majority(),
                    "box_readers": np.array(ann.box_readers, np.int64)}))
    return cxr_base.Annotations(records=records, missing=missing,
                                counts=vinbig.counts(parsed, rows))


def _check_boxes_fit(files: cxr_base.FileIndex, image_id: str, path, boxes: np.ndarray) -> None:
  """A converted image without a size table must be at original size: its boxes must fit."""
  try:
    with Image.open(path) as pil:
      width, height = pil.size
  except OSError:
    return  # unreadable: skipped and reported when the image is decoded
  if boxes[:, 2].max() > height + _BOX_TOLERANCE or boxes[:, 3].max() > width + _BOX_TOLERANCE:
    raise files.error(
        f"the boxes of {image_id} reach ({boxes[:, 3].max():.0f}, {boxes[:, 2].max():.0f}) but "
        f"{path} is {width}x{height}: the converted images were resized, and train.csv's boxes "
        "are in original DICOM pixels. Add the variant's size table (a CSV with columns "
        "image_id, dim0, dim1) below the manual directory, or use the original DICOMs")
