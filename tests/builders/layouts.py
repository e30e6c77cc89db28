"""Small manual directories in each real dataset's layouts, with the ground truth they encode.

Every image is made of four flat quadrants whose 8-bit display levels are known, so a test can
check orientation and intensity conversion of the stored image at its corners. Images are 64
pixels (VinBig: non-square DICOM sizes); annotations use the release's pixel grids (NIH, RSNA and
SIIM: 1024; VinBig: the DICOM's own size).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import shutil
from typing import Any, Sequence

import numpy as np
from PIL import Image

from builders import dicom_writer

SIZE = 64


@dataclasses.dataclass
class Truth:
  """Per image id: what the built dataset must hold."""

  labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  patient: dict[str, str] = dataclasses.field(default_factory=dict)
  view: dict[str, str] = dataclasses.field(default_factory=dict)
  levels: dict[str, tuple[int, int, int, int]] = dataclasses.field(default_factory=dict)
  boxes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # normalised
  box_labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  original_size: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
  masks: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # full resolution
  extras: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  files: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)
  test_ids: list[str] = dataclasses.field(default_factory=list)  # an official test split


def quadrant_levels(rng: np.random.Generator) -> tuple[int, int, int, int]:
  """Four distinct 8-bit levels (top-left, top-right, bottom-left, bottom-right)."""
  return tuple(int(v) for v in rng.choice(np.arange(10, 246, 7), 4, replace=False))


def quadrants(levels: Sequence[float], shape: tuple[int, int], dtype=np.uint8) -> np.ndarray:
  h, w = shape
  out = np.empty(shape, np.float64)
  out[:h // 2, :w // 2], out[:h // 2, w // 2:] = levels[0], levels[1]
  out[h // 2:, :w // 2], out[h // 2:, w // 2:] = levels[2], levels[3]
  return out.astype(dtype)


def write_csv(path: pathlib.Path, header: str, rows: Sequence[Sequence[Any]],
              trailing: str = "") -> pathlib.Path:
  """A CSV with a literal header line (to reproduce the releases' quirks) and plain rows."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    f.write(header + "\n")
    writer = csv.writer(f, lineterminator=trailing + "\n")
    writer.writerows(rows)
  return path


def save_png(path: pathlib.Path, pixels: np.ndarray, mode: str = "L") -> pathlib.Path:
  """Saves 8-bit ``pixels`` as grayscale, RGB, RGBA or 16-bit (``I;16``) PNG, or as JPEG."""
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(pixels)
  if mode == "I;16":
    image = Image.fromarray(pixels.astype(np.uint16) * 257)
  elif mode != "L":
    image = image.convert(mode)
  image.save(path)
  return path


def _box_array(boxes, frame: tuple[int, int]) -> np.ndarray:
  h, w = frame
  return (np.array(boxes, np.float64).reshape(-1, 4) / [h, w, h, w]).astype(np.float32)


# NIH ChestX-ray14.

NIH_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
               "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
               "Pleural_Thickening", "Hernia")
NIH_BOX_SPELLING = {"Infiltration": "Infiltrate"}
NIH_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
NIH_ENTRY_HEADER_QUOTED = ('Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,'
                           'Patient Gender,View Position,"OriginalImage[Width, Height]",'
                           '"OriginalImagePixelSpacing[x, y]"')


def nih(root: pathlib.Path, *, layout: str = "official", patients: int = 24,
        seed: int = 0) -> Truth:
  """NIH ChestX-ray14 in the official (``images/``) or Kaggle (``images_00k/images/``) layout.

  The official layout uses the unquoted 2017 header with trailing commas and a few RGB, RGBA and
  16-bit PNGs; the Kaggle layout a quoted header (as pandas writes it) and JPEG copies of some.
  """
  rng = np.random.default_rng(seed)
  truth = Truth()
  entries, box_rows, train_val = [], [], []
  image_index = 0
  for p in range(patients):
    patient_id = str(p + 1)
    in_test = p % 4 == 3
    for follow_up in range(1 + p % 3):
      stem = f"{p + 1:08d}_{follow_up:03d}"
      count = int(rng.integers(0, 4))
      findings = sorted(rng.choice(len(NIH_CLASSES), count, replace=False).tolist())
      names = [NIH_CLASSES[i] for i in findings]
      labels = np.zeros(len(NIH_CLASSES), np.float32)
      labels[findings] = 1
      view = "PA" if image_index % 3 else "AP"
      entries.append([f"{stem}.png", "|".join(names) or "No Finding", follow_up, patient_id,
                      int(rng.integers(20, 90)), "MF"[image_index % 2], view, 2500, 2048,
                      0.143, 0.143])
      boxes, box_labels = [], []
      for i in findings[:2] if image_index % 2 == 0 else []:
        x, y = rng.uniform(0, 800, 2)
        w, h = rng.uniform(10, 200, 2)
        box_rows.append([f"{stem}.png", NIH_BOX_SPELLING.get(NIH_CLASSES[i], NIH_CLASSES[i]),
                         x, y, w, h])
        boxes.append([y, x, y + h, x + w])
        box_labels.append(i)
      levels = quadrant_levels(rng)
      folder = (root / "images" if layout == "official"
                else root / f"images_{1 + image_index % 3:03d}" / "images")
      mode, suffix = "L", ".png"
      if layout == "official":
        mode = {5: "RGB", 6: "RGBA", 7: "I;16"}.get(image_index, "L")
      elif image_index % 5 == 4:
        suffix = ".jpg"
      truth.files[stem] = save_png(folder / f"{stem}{suffix}", quadrants(levels, (SIZE, SIZE)),
                                   mode)
      truth.labels[stem], truth.patient[stem], truth.view[stem] = labels, patient_id, view
      truth.levels[stem] = levels
      truth.boxes[stem] = _box_array(boxes, (1024, 1024))
      truth.box_labels[stem] = np.array(box_labels, np.int64)
      truth.original_size[stem] = (1024, 1024)
      (truth.test_ids if in_test else train_val).append(stem)
      image_index += 1
  header = NIH_ENTRY_HEADER if layout == "official" else NIH_ENTRY_HEADER_QUOTED
  if layout == "official":
    write_csv(root / "Data_Entry_2017_v2020.csv", header, entries, trailing=",")
  else:
    write_csv(root / "Data_Entry_2017_v2020.csv", header,
              [row[:7] + [f"{row[7]},{row[8]}", f"{row[9]},{row[10]}"] for row in entries])
  write_csv(root / "BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,", box_rows,
            trailing=",,," if layout == "official" else "")
  (root / "train_val_list.txt").write_text("".join(f"{s}.png\n" for s in train_val))
  (root / "test_list.txt").write_text("".join(f"{s}.png\n" for s in truth.test_ids))
  return truth


# VinBig-CXR.

VINBIG_CLASSES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly",
                  "Consolidation", "ILD", "Infiltration", "Lung Opacity", "Nodule/Mass",
                  "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
                  "Pulmonary fibrosis")
VINBIG_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
# (Bits Stored, photometric, compression) cycled over the images.
VINBIG_ENCODINGS = ((16, "MONOCHROME1", "none"), (12, "MONOCHROME2", "none"),
                    (12, "MONOCHROME1", "jpeg_lossless"), (16, "MONOCHROME2", "jpeg2000"),
                    (8, "MONOCHROME2", "none"), (12, "MONOCHROME2", "jpeg2000"))


def vinbig(root: pathlib.Path, *, layout: str = "dicom", images: int = 24, seed: int = 1) -> Truth:
  """VinBig-CXR: ``train/*.dicom`` (mixed bit depths, photometrics and transfer syntaxes) and
  ``train.csv`` with three readers per image; or resized PNGs (``layout="png_resized"``, with a
  ``train_meta.csv`` size table) or PNGs at original size (``layout="png"``)."""
  rng = np.random.default_rng(seed)
  truth = Truth()
  rows = []
  for n in range(images):
    image_id = f"{rng.integers(16**12):012x}{n:04d}"
    h, w = (72, 64) if n % 2 else (64, 80)
    readers = [f"R{r}" for r in rng.choice(np.arange(1, 18), 3, replace=False)]
    boxes, box_labels, box_readers = [], [], []
    votes = np.zeros(len(VINBIG_CLASSES), int)
    for reader in readers:
      marked = sorted(rng.choice(len(VINBIG_CLASSES), int(rng.integers(0, 3)), replace=False))
      if n % 3 == 0:  # a third of the images: normal for every reader
        marked = []
      if n % 3 == 1:  # a shared finding, so majority labels are not empty
        marked = sorted({0, *marked})
      if not marked:
        rows.append([image_id, "No finding", 14, reader, "", "", "", ""])
      for c in marked:
        votes[c] += 1
        for _ in range(1 + (c % 2)):
          x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
          x1, y1 = x0 + rng.uniform(2, w / 2), y0 + rng.uniform(2, h / 2)
          rows.append([image_id, VINBIG_CLASSES[c], c, reader, f"{x0:.1f}", f"{y0:.1f}",
                       f"{x1:.1f}", f"{y1:.1f}"])
          boxes.append([round(y0, 1), round(x0, 1), round(y1, 1), round(x1, 1)])
          box_labels.append(c)
          box_readers.append(int(reader[1:]))
    bits, photometric, compression = VINBIG_ENCODINGS[n % len(VINBIG_ENCODINGS)]
    levels = quadrant_levels(rng)
    top = 2**bits - 1
    stored = np.array(levels, np.float64) / 255 * top
    if photometric == "MONOCHROME1":
      stored = top - stored
    if layout == "dicom":
      truth.files[image_id] = dicom_writer.write_radiograph(
          root / "train" / f"{image_id}.dicom", quadrants(stored, (h, w), np.uint16),
          bits_stored=bits, photometric=photometric, compression=compression,
          patient_id="", view_position="")
    else:
      png_size = (h // 2, w // 2) if layout == "png_resized" else (h, w)
      truth.files[image_id] = save_png(root / "train" / f"{image_id}.png",
                                       quadrants(levels, png_size))
    truth.labels[image_id] = (votes > 0).astype(np.float32)
    truth.patient[image_id], truth.view[image_id], truth.levels[image_id] = image_id, "", levels
    truth.boxes[image_id] = _box_array(boxes, (h, w))
    truth.box_labels[image_id] = np.array(box_labels, np.int64)
    truth.original_size[image_id] = (h, w)
    truth.extras[image_id] = {"labels_majority": (votes >= 2).astype(np.float32),
                              "box_readers": np.array(box_readers, np.int64)}
  rng.shuffle(rows)
  write_csv(root / "train.csv", VINBIG_HEADER, rows)
  if layout == "png_resized":
    write_csv(root / "train_meta.csv", "image_id,dim0,dim1",
              [[i, *truth.original_size[i]] for i in truth.labels])
  if layout == "dicom":  # unlabelled test images, which the builder must ignore
    dicom_writer.write_radiograph(root / "test" / "ffffffffffff9999.dicom",
                                  np.zeros((SIZE, SIZE), np.uint8))
  return truth


# RSNA Pneumonia.

RSNA_CLASS_INFO = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")


def rsna(root: pathlib.Path, *, layout: str = "dicom", images: int = 24, seed: int = 2) -> Truth:
  """RSNA stage 2: ``stage_2_train_images/<patientId>.dcm`` (8-bit MONOCHROME2) and both CSVs;
  or ``layout="png"`` with ``.png`` and ``.jpg`` files of the same stems."""
  rng = np.random.default_rng(seed)
  truth = Truth()
  label_rows, info_rows = [], []
  for n in range(images):
    patient_id = f"{n:04d}{rng.integers(16**8):08x}-{rng.integers(16**4):04x}"
    info = n % 3
    boxes = []
    if info == 2:
      for _ in range(1 + n % 4):
        x, y, w, h = (float(v) for v in rng.integers(0, 600, 2).tolist()
                      + rng.integers(20, 300, 2).tolist())
        label_rows.append([patient_id, x, y, w, h, 1])
        info_rows.append([patient_id, RSNA_CLASS_INFO[2]])
        boxes.append([y, x, y + h, x + w])
    else:
      label_rows.append([patient_id, "", "", "", "", 0])
      info_rows.append([patient_id, RSNA_CLASS_INFO[info]])
    levels = quadrant_levels(rng)
    pixels = quadrants(levels, (SIZE, SIZE))
    view = "PA" if n % 2 else "AP"
    if layout == "dicom":
      truth.files[patient_id] = dicom_writer.write_radiograph(
          root / "stage_2_train_images" / f"{patient_id}.dcm", pixels, bits_stored=8,
          patient_id=patient_id, view_position=view)
    else:
      suffix = ".jpg" if n % 2 else ".png"
      truth.files[patient_id] = save_png(root / "images" / f"{patient_id}{suffix}", pixels)
      view = ""
    truth.labels[patient_id] = np.array([float(info == 2)], np.float32)
    truth.patient[patient_id], truth.view[patient_id] = patient_id, view
    truth.levels[patient_id] = levels
    truth.boxes[patient_id] = _box_array(boxes, (1024, 1024))
    truth.box_labels[patient_id] = np.zeros(len(boxes), np.int64)
    truth.original_size[patient_id] = (1024, 1024)
    truth.extras[patient_id] = {"class_info": info}
  write_csv(root / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target", label_rows)
  write_csv(root / "stage_2_detailed_class_info.csv", "patientId,class", info_rows)
  if layout == "dicom":
    dicom_writer.write_radiograph(root / "stage_2_test_images" / "unlabelled.dcm",
                                  np.zeros((SIZE, SIZE), np.uint8))
  return truth


# SIIM-ACR Pneumothorax.

BLOCK = 32  # masks are unions of 32-pixel blocks of the 1024 grid: exact at a 32-pixel resolution


def mask_to_rle(mask: np.ndarray) -> str:
  """Relative column-major RLE from the change points of the column-major pixel sequence."""
  flat = np.concatenate([[0], mask.flatten(order="F").astype(np.int8), [0]])
  changes = np.flatnonzero(np.diff(flat))
  starts, ends = changes[0::2], changes[1::2]
  gaps = starts - np.concatenate([[0], ends[:-1]])
  return " ".join(f"{g} {n}" for g, n in zip(gaps, ends - starts))


def random_block_mask(rng: np.random.Generator, regions: int) -> list[np.ndarray]:
  """``regions`` rectangles of whole 32-pixel blocks in a 1024 x 1024 grid, one mask each."""
  masks = []
  for _ in range(regions):
    r0, c0 = rng.integers(0, 24, 2)
    r1, c1 = r0 + rng.integers(1, 8), c0 + rng.integers(1, 8)
    mask = np.zeros((1024, 1024), bool)
    mask[r0 * BLOCK:r1 * BLOCK, c0 * BLOCK:c1 * BLOCK] = True
    masks.append(mask)
  return masks


def siim(root: pathlib.Path, *, layout: str = "dicom", images: int = 24, seed: int = 3) -> Truth:
  """SIIM-ACR stage 1: nested ``dicom-images-train/<study>/<series>/<sop>.dcm`` (JPEG baseline)
  and ``train-rle.csv`` (several rows for some images, ``-1`` and `` -1``); images 0 and 1 share a
  patient. Or ``layout="png"``: ``png_images/``, ``png_masks/`` and two index CSVs."""
  rng = np.random.default_rng(seed)
  truth = Truth()
  rle_rows, index_rows = [], []
  for n in range(images):
    image_id = f"1.2.276.0.7230010.3.1.4.8323329.{1000 + n}.1517875{n:03d}.{rng.integers(10**6)}"
    patient_id = "shared-patient" if n < 2 else f"patient-{rng.integers(10**9):09d}"
    regions = [0, 1, 2, 3][n % 4]
    masks = random_block_mask(rng, regions)
    union = np.zeros((1024, 1024), bool)
    for mask in masks:
      union |= mask
      rle_rows.append([image_id, mask_to_rle(mask)])
    if not masks:
      rle_rows.append([image_id, " -1" if n % 8 == 0 else "-1"])
    levels = quadrant_levels(rng)
    pixels = quadrants(levels, (SIZE, SIZE))
    view = "PA" if n % 2 else "AP"
    if layout == "dicom":
      truth.files[image_id] = dicom_writer.write_radiograph(
          root / "dicom-images-train" / f"1.2.{n}.study" / f"1.2.{n}.series" / f"{image_id}.dcm",
          pixels, bits_stored=8, compression="jpeg_baseline", patient_id=patient_id,
          view_position=view, sop_instance_uid=image_id)
    else:
      name = f"{n}_train_{int(union.any())}_.png"
      truth.files[image_id] = save_png(root / "png_images" / name, pixels)
      save_png(root / "png_masks" / name, union.astype(np.uint8) * 255)
      index_rows.append([name, image_id, int(union.any())])
      patient_id, view = image_id, ""
    truth.labels[image_id] = np.array([float(union.any())], np.float32)
    truth.patient[image_id], truth.view[image_id] = patient_id, view
    truth.levels[image_id], truth.masks[image_id] = levels, union
    truth.original_size[image_id] = (1024, 1024)
  if layout == "dicom":
    write_csv(root / "train-rle.csv", "ImageId, EncodedPixels", rle_rows)
    dicom_writer.write_radiograph(root / "dicom-images-test" / "a" / "b" / "1.2.3.4.dcm",
                                  np.zeros((SIZE, SIZE), np.uint8))
  else:
    half = len(index_rows) * 3 // 4
    write_csv(root / "stage_1_train_images.csv", "new_filename,ImageId,has_pneumo",
              index_rows[:half])
    write_csv(root / "stage_1_test_images.csv", "new_filename,ImageId,has_pneumo",
              index_rows[half:])
  return truth


LAYOUTS = {
    "nih_chest_xray14": nih, "vinbig_cxr": vinbig, "rsna_pneumonia": rsna,
    "siim_acr_pneumothorax": siim,
}


def copy_tree(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst)
  return dst
