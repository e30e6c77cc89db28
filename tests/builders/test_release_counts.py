"""Label parsing on annotation files of the releases' size, schema and counts (docs/datasets.md)."""

import pytest

from builders import release_csvs
from tfds_builders.cxr_base import manual_dir, report, tables
from tfds_builders.nih_chest_xray14 import annotations as nih
from tfds_builders.rsna_pneumonia import annotations as rsna
from tfds_builders.siim_acr_pneumothorax import annotations as siim
from tfds_builders.vinbig_cxr import annotations as vinbig


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  root = tmp_path_factory.mktemp("release")
  for write in (release_csvs.nih, release_csvs.vinbig, release_csvs.rsna, release_csvs.siim):
    write(root)
  return root


def test_nih(release):
  entries = nih.parse_data_entry(release / "Data_Entry_2017_v2020.csv")
  boxes = nih.parse_bbox_list(release / "BBox_List_2017.csv")
  train_val = tables.read_id_list(release / "train_val_list.txt")
  test = tables.read_id_list(release / "test_list.txt")
  found = nih.counts(entries, boxes, train_val, test)
  c = release_csvs.NIH
  assert (found["images"], found["patients"]) == (112_120, 30_805) == (c["images"], c["patients"])
  assert found["views"] == {"PA": 67_310, "AP": 44_810}
  assert found["class_counts"] == {"No Finding": c["no_finding"], **c["classes"]}
  assert (found["boxes"], found["box_images"], found["box_classes"]) == (984, 880, 8)
  assert (found["train_val_images"], found["test_images"]) == (86_524, 25_596)
  assert {b.finding for b in boxes} >= {"Infiltration"}  # the list's "Infiltrate"
  assert report.release_differences(found, nih.EXPECTED_COUNTS) == {}


def test_vinbig(release):
  images, rows = vinbig.parse_train_csv(release / "train.csv")
  found = vinbig.counts(images, rows)
  c = release_csvs.VINBIG
  assert (found["rows"], found["images"]) == (67_914, 15_000)
  assert found["readers_per_image"] == {"3": 15_000}
  assert (found["radiologists"], found["no_finding_all_readers"]) == (17, 10_606)
  for name in c["union"]:
    assert found["union_counts"][name] == c["union"][name]
    assert found["majority_counts"][name] == c["majority"][name]
  assert report.release_differences(found, vinbig.EXPECTED_COUNTS) == {}


def test_rsna(release):
  labels, rows = rsna.parse_labels(release / "stage_2_train_labels.csv")
  info = rsna.parse_class_info(release / "stage_2_detailed_class_info.csv")
  found = rsna.counts(labels, rows)
  assert (found["rows"], found["images"], found["positive_images"]) == (30_227, 26_684, 6_012)
  assert (found["boxes"], found["max_boxes_per_image"]) == (9_555, 4)
  positive = rsna.CLASS_INFO_NAMES.index("Lung Opacity")
  assert sum(v == positive for v in info.values()) == 6_012
  assert report.release_differences(found, rsna.EXPECTED_COUNTS) == {}


def test_siim(release):
  rles, rows = siim.parse_rle_csv(release / "train-rle.csv")
  found = siim.rle_counts(rles, rows)
  assert found == {"rows": 12_954, "images": 12_047, "positive_images": 2_669,
                   "multi_row_images": 624}
  assert sum(map(len, rles.values())) == 12_954 - (12_047 - 2_669)  # "-1" rows hold no mask
  index_paths = manual_dir.FileIndex(release, dataset="siim", instructions="").\
      csv_files_with_columns(siim.PNG_INDEX_COLUMNS)
  assert len(index_paths) == 2
  index = siim.parse_png_index(index_paths)
  assert siim.png_counts(index) == {"images": 12_047, "positive_images": 2_669}
  assert report.release_differences(found, siim.EXPECTED_COUNTS) == {}


def test_differences_from_the_release_are_reported():
  found = {"images": 100, "views": {"PA": 60}, "unrelated": 1}
  expected = {"images": 112_120, "views": {"PA": 67_310, "AP": 44_810}, "boxes": 984}
  assert report.release_differences(found, expected) == {
      "images": {"expected": 112_120, "found": 100},
      "views.PA": {"expected": 67_310, "found": 60},
      "views.AP": {"expected": 44_810, "found": 0}}
