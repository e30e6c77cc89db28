"""Annotation files at the size of the official releases, with the counts docs/datasets.md gives.

No images: these exercise the label parsers on files with the releases' exact schemas and row
counts. Every count below is copied from the dataset description, and each file is constructed
so that it holds exactly those counts.
"""

from __future__ import annotations

import pathlib

import numpy as np

from builders.layouts import NIH_CLASSES, NIH_ENTRY_HEADER, VINBIG_CLASSES, VINBIG_HEADER, write_csv

NIH = dict(
    images=112_120, patients=30_805, pa=67_310, no_finding=60_361, test_images=25_596,
    boxes=984, box_images=880,
    classes={"Infiltration": 19_894, "Effusion": 13_317, "Atelectasis": 11_559, "Nodule": 6_331,
             "Mass": 5_782, "Pneumothorax": 5_302, "Consolidation": 4_667,
             "Pleural_Thickening": 3_385, "Cardiomegaly": 2_776, "Emphysema": 2_516,
             "Edema": 2_303, "Fibrosis": 1_686, "Pneumonia": 1_431, "Hernia": 227})
NIH_BOX_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule",
                   "Pneumonia", "Pneumothorax")
VINBIG = dict(rows=67_914, images=15_000, radiologists=17, normal=10_606,
              union={"Aortic enlargement": 3_067, "Atelectasis": 186, "Pneumothorax": 96,
                     "Other lesion": 1_134},
              majority={"Aortic enlargement": 2_346, "Atelectasis": 62, "Pneumothorax": 58,
                        "Other lesion": 362})
RSNA = dict(rows=30_227, images=26_684, positives=6_012, boxes=9_555, max_boxes=4)
SIIM = dict(rows=12_954, images=12_047, positives=2_669, multi_row=624)


def nih(root: pathlib.Path) -> None:
  """Data_Entry_2017_v2020.csv, BBox_List_2017.csv and the two split lists."""
  c = NIH
  # 19,705 patients with 4 images and 11,100 with 3: 112,120 images of 30,805 patients.
  four = c["images"] - 3 * c["patients"]
  sizes = [4] * four + [3] * (c["patients"] - four)
  names, owners = [], []
  for p, size in enumerate(sizes):
    for k in range(size):
      names.append(f"{p + 1:08d}_{k:03d}.png")
      owners.append(p)
  # The first 6,399 patients (4 images each) form the test list: 25,596 images.
  test_patients = c["test_images"] // 4
  labels: list[list[str]] = [[] for _ in names]
  finding_images = np.random.default_rng(0).permutation(len(names))[:c["images"] - c["no_finding"]]
  start = 0  # each class covers a run of the finding images, wrapping around: all get one
  for name, count in c["classes"].items():
    for k in range(start, start + count):
      labels[finding_images[k % len(finding_images)]].append(name)
    start += count
  rows = [[n, "|".join(sorted(l, key=NIH_CLASSES.index)) or "No Finding", 0, owners[i] + 1, 45,
           "F", "PA" if i < c["pa"] else "AP", 2500, 2048, 0.143, 0.143]
          for i, (n, l) in enumerate(zip(names, labels))]
  write_csv(root / "Data_Entry_2017_v2020.csv", NIH_ENTRY_HEADER, rows, trailing=",")
  boxed = [names[i] for i in sorted(finding_images[:c["box_images"]])]
  box_rows = [[boxed[k % len(boxed)], NIH_BOX_CLASSES[k % 8], 100.5, 200.25, 50, 60]
              for k in range(c["boxes"])]
  write_csv(root / "BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,", box_rows,
            trailing=",,,")
  (root / "test_list.txt").write_text(
      "".join(f"{n}\n" for n, o in zip(names, owners) if o < test_patients))
  (root / "train_val_list.txt").write_text(
      "".join(f"{n}\n" for n, o in zip(names, owners) if o >= test_patients))


def vinbig(root: pathlib.Path) -> None:
  """train.csv: three readers per image; the listed classes' union and majority counts."""
  c = VINBIG
  ids = [f"{i:032x}" for i in range(c["images"])]
  readers = [[f"R{1 + (i + offset) % c['radiologists']}" for offset in (0, 5, 11)]
             for i in range(c["images"])]
  abnormal = c["images"] - c["normal"]
  marks = [[set(), set(), set()] for _ in range(abnormal)]  # classes per image and reader
  start = 0
  for name in c["union"]:
    class_id = VINBIG_CLASSES.index(name)
    for k in range(c["union"][name]):
      # The first `majority` images get the class from two readers, the others from one.
      for reader in ((0, 1) if k < c["majority"][name] else (0,)):
        marks[(start + k) % abnormal][reader].add(class_id)
    start += c["union"][name]
  rows = []
  for i in range(c["images"]):
    for reader in range(3):
      classes = sorted(marks[i - c["normal"]][reader]) if i >= c["normal"] else []
      if not classes:
        rows.append([ids[i], "No finding", 14, readers[i][reader], "", "", "", ""])
      for class_id in classes:
        rows.append([ids[i], VINBIG_CLASSES[class_id], class_id, readers[i][reader],
                     100.0, 200.0, 300.0, 400.0])
  # Further boxes of classes a reader already marked leave every image-level count unchanged.
  finding_rows = [r for r in rows if r[2] != 14]
  extra = c["rows"] - len(rows)
  assert extra >= 0
  rows += [finding_rows[k % len(finding_rows)] for k in range(extra)]
  write_csv(root / "train.csv", VINBIG_HEADER, rows)


def rsna(root: pathlib.Path) -> None:
  """stage_2_train_labels.csv and stage_2_detailed_class_info.csv."""
  c = RSNA
  ids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(c["images"])]
  # 100 positives with 4 boxes, 3,243 with 2 and 2,669 with 1: 6,012 images, 9,555 boxes.
  boxes_per_positive = [4] * 100 + [2] * 3_243 + [1] * (c["positives"] - 3_343)
  label_rows, info_rows = [], []
  for i, patient in enumerate(ids):
    if i < c["positives"]:
      for _ in range(boxes_per_positive[i]):
        label_rows.append([patient, 264.0, 152.0, 213.0, 379.0, 1])
        info_rows.append([patient, "Lung Opacity"])
    else:
      label_rows.append([patient, "", "", "", "", 0])
      info_rows.append([patient, "Normal" if i % 2 else "No Lung Opacity / Not Normal"])
  write_csv(root / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target", label_rows)
  write_csv(root / "stage_2_detailed_class_info.csv", "patientId,class", info_rows)


def siim(root: pathlib.Path) -> None:
  """train-rle.csv and the PNG variant's two index CSVs."""
  c = SIIM
  ids = [f"1.2.276.0.7230010.3.1.4.8323329.{i}.1517875163.{i}" for i in range(c["images"])]
  # 283 positives with 3 rows and 341 with 2 (624 multi-row images, 1,531 rows), 2,045 with 1.
  rows_per_positive = [3] * 283 + [2] * (c["multi_row"] - 283) + [1] * (
      c["positives"] - c["multi_row"])
  rows, index_rows = [], []
  for i, image_id in enumerate(ids):
    if i < c["positives"]:
      rows += [[image_id, f"{1000 + 97 * k} 20 500 30"] for k in range(rows_per_positive[i])]
    else:
      rows.append([image_id, " -1" if i % 2 else "-1"])
    index_rows.append([f"{i}_train_{int(i < c['positives'])}_.png", image_id,
                       int(i < c["positives"])])
  write_csv(root / "train-rle.csv", "ImageId, EncodedPixels", rows)
  write_csv(root / "stage_1_train_images.csv", "new_filename,ImageId,has_pneumo",
            index_rows[::2])
  write_csv(root / "stage_1_test_images.csv", "new_filename,ImageId,has_pneumo",
            index_rows[1::2])
