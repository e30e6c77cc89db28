"""VinBig-CXR builder: mixed DICOMs, resized PNGs with a size table, PNGs at original size."""

import numpy as np
import pytest

from builders import helpers, layouts
from tfds_builders import vinbig_cxr

LAYOUTS = ("dicom", "png_resized", "png")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = {}
  for layout in LAYOUTS:
    root = tmp_path_factory.mktemp(f"vinbig_{layout}")
    truth = layouts.vinbig(root / "manual", layout=layout)
    builder = helpers.build("vinbig_cxr", root / "manual", root / "data")
    out[layout] = truth, builder, helpers.read_all(builder)
  return out


def test_class_order():
  assert vinbig_cxr.CLASS_NAMES == layouts.VINBIG_CLASSES


@pytest.mark.parametrize("layout", LAYOUTS)
def test_examples_match_the_annotations(built, layout):
  truth, builder, data = built[layout]
  examples = {k: v for split in helpers.MAIN_SPLITS for k, v in data[split].items()}
  helpers.check_examples(examples, truth, boxes=True, mask=False,
                         extras=("labels_majority", "box_readers"))
  helpers.check_report(builder, data)


def test_union_and_majority_labels_differ(built):
  truth, _, data = built["dicom"]
  examples = {k: v for split in helpers.MAIN_SPLITS for k, v in data[split].items()}
  union = np.sum([e["labels"] for e in examples.values()], axis=0)
  majority = np.sum([e["labels_majority"] for e in examples.values()], axis=0)
  assert (majority <= union).all() and (majority < union).any() and majority.sum() > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_images_are_the_split_unit(built, layout):
  truth, _, data = built[layout]
  helpers.check_splits(data, truth)
  assert all(e["patient_id"] == e["image_id"] for split in data.values() for e in split.values())


def test_split_is_the_same_for_every_layout(built):
  memberships = [{s: set(d) for s, d in built[layout][2].items()} for layout in LAYOUTS]
  assert memberships[0] == memberships[1] == memberships[2]


def test_unlabelled_test_folder_is_ignored(built):
  _, _, data = built["dicom"]
  assert not any("9999" in i for split in data.values() for i in split)
