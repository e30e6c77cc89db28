"""SIIM-ACR Pneumothorax Segmentation: 12,047 radiographs, pneumothorax masks on 2,669."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from tfds_builders.cxr_base import dicom
from tfds_builders import cxr_base
from tfds_builders.cxr_base import images, report

# Relative: TFDS's build command
# (`python -m otcxr_jax.data.build tfds_builders/siim_acr_pneumothorax`) imports this package by
# its name.
from . import annotations as siim

CLASS_NAMES = siim.CLASS_NAMES

_INSTRUCTIONS = """\
SIIM-ACR Pneumothorax Segmentation data cannot be downloaded by a program. Download by hand
either the stage-1 DICOM release (e.g. the Kaggle dataset "siim-train-test" or
"siim-acr-pneumothorax-segmentation-data"), laid out as

  <manual_dir>/train-rle.csv                      (columns ImageId, EncodedPixels)
  <manual_dir>/dicom-images-train/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm
  <manual_dir>/dicom-images-test/...              (unlabelled; not used)

or the PNG variant (Kaggle dataset "siim-acr-pneumothorax", 12,047 images and masks):

  <manual_dir>/png_images/<new_filename>.png
  <manual_dir>/png_masks/<new_filename>.png
  <manual_dir>/*.csv                              (columns new_filename, ImageId, has_pneumo)

and extract it into the manual directory. Files are found by name anywhere below the manual
directory; with train-rle.csv present, masks come from it.
"""


class Builder(cxr_base.CxrBuilder):
  """SIIM-ACR Pneumothorax at 224, 256 or 512 pixels with masks (see docs/datasets.md)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  CLASS_NAMES = CLASS_NAMES
  HAS_BOXES = False
  HAS_MASK = True
  EXPECTED_COUNTS = siim.EXPECTED_COUNTS
  DESCRIPTION = (
      "SIIM-ACR Pneumothorax Segmentation (stage-1 training set): 12,047 chest radiographs; "
      "`mask` is the union of an image's pneumothorax regions (1 inside), `labels` whether it "
      "has any. Seeded patient-disjoint 70/15/15 split (DICOM Patient ID; with the PNG variant, "
      "which has no patient ids, each image is its own unit).")
  HOMEPAGE = "https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation"
  CITATION = """\
@misc{siim2019pneumothorax,
  title={{SIIM-ACR} Pneumothorax Segmentation},
  author={Zawacki, Anna and Wu, Carol and Shih, George and Elliott, Julia and Fomitchev, Mikhail
          and Hussain, Mohannad and Lakhani, Paras and Culliton, Phil and Bao, Shunxing},
  howpublished={Kaggle},
  year={2019}
}"""

  def _read_annotations(self, files: cxr_base.FileIndex) -> cxr_base.Annotations:
    rle_path = files.find([siim.RLE_CSV], required=False)
    index_paths = files.csv_files_with_columns(siim.PNG_INDEX_COLUMNS)
    if rle_path is None and not index_paths:
      raise files.error(f"expected {siim.RLE_CSV} (DICOM layout) or the PNG variant's CSVs with "
                        f"columns {', '.join(siim.PNG_INDEX_COLUMNS)}, found neither")
    png_index = siim.parse_png_index(index_paths)
    dicoms = files.images(extensions=images.DICOM_SUFFIXES)
    png_images = files.images(extensions=(".png",), folder="png_images") if png_index else {}
    warnings = []
    if rle_path is not None:
      rles, rows = siim.parse_rle_csv(rle_path)
      counts = siim.rle_counts(rles, rows)
      sources = {i: (bool(r), ("rle", r)) for i, r in rles.items()}
    else:
      png_masks = files.images(extensions=(".png",), folder="png_masks")
      counts = siim.png_counts(png_index)
      sources = {i: (positive, ("png", png_masks.get(pathlib.Path(name).stem)))
                 for i, (name, positive) in png_index.items()}
      warnings.append("PNG variant: masks from png_masks/, no patient ids (images are the unit)")

    records, missing = [], []
    for image_id, (positive, mask_source) in sorted(sources.items()):
      path = dicoms.get(image_id)
      if path is None and image_id in png_index:
        path = png_images.get(pathlib.Path(png_index[image_id][0]).stem)
      if path is None or mask_source[1] is None:
        missing.append(image_id)
        continue
      records.append(cxr_base.Record(
          image_id=image_id, patient_id=image_id, path=path,
          labels=np.array([positive], np.float32), frame=siim.IMAGE_SIZE,
          mask_source=mask_source))
    self._read_patient_ids(records)
    return cxr_base.Annotations(records=records, missing=missing, counts=counts,
                                warnings=warnings)

  def _read_patient_ids(self, records: list[cxr_base.Record]) -> None:
    """Patient ID and View Position from the DICOM headers.

    An unreadable header leaves the image id as patient id; the image itself is then skipped,
    with its reason, when it is read.
    """
    dicom_records = [r for r in records if r.path.suffix.lower() in images.DICOM_SUFFIXES]
    progress = report.Progress(f"{self.name}: DICOM headers", len(dicom_records))
    for done, record in enumerate(dicom_records, start=1):
      try:
        header = dicom.read_header(record.path)
      except Exception:  # noqa: BLE001 - the image is then skipped, with its reason, when read
        pass
      else:
        record.patient_id = header.patient_id or record.image_id
        record.view = header.view_position
      progress.update(done)

  def _decode_mask(self, record: cxr_base.Record, frame: tuple[int, int]) -> np.ndarray:
    kind, value = record.mask_source
    if kind == "rle":
      return siim.decode_union(value, frame)
    with Image.open(value) as pil:
      return np.asarray(pil.convert("L")) > 0
