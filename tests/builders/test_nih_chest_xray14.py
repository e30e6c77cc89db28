"""NIH ChestX-ray14 builder on fixture downloads in the official and the Kaggle layout."""

import numpy as np
import pytest

from builders import helpers, layouts
from tfds_builders import nih_chest_xray14


@pytest.fixture(scope="module", params=["official", "kaggle"])
def built(request, tmp_path_factory):
  root = tmp_path_factory.mktemp(f"nih_{request.param}")
  truth = layouts.nih(root / "manual", layout=request.param)
  builder = helpers.build("nih_chest_xray14", root / "manual", root / "data")
  return truth, builder, helpers.read_all(builder)


def test_class_order():
  assert nih_chest_xray14.CLASS_NAMES == layouts.NIH_CLASSES


def test_examples_match_the_annotations(built):
  truth, _, data = built
  examples = {k: v for split in helpers.MAIN_SPLITS for k, v in data[split].items()}
  helpers.check_examples(examples, truth, boxes=True, mask=False)
  boxed = [e for e in examples.values() if len(e["boxes"])]
  assert boxed and {int(i) for e in boxed for i in e["box_labels"]}  # fixture has boxes
  assert any(e["labels"].sum() == 0 for e in examples.values())  # and "No Finding" images


def test_official_test_split_and_carved_validation(built):
  truth, _, data = built
  helpers.check_splits(data, truth, official_test=truth.test_ids, validation_fraction=0.10)


def test_report_and_metadata(built):
  _, builder, data = built
  helpers.check_report(builder, data)
  assert builder.info.metadata["class_names"] == list(nih_chest_xray14.CLASS_NAMES)
  assert builder.info.features["labels"].shape == (14,)
  assert builder.info.file_format.value == "array_record"


def test_infiltrate_boxes_are_infiltration(built):
  truth, _, data = built
  infiltration = nih_chest_xray14.CLASS_NAMES.index("Infiltration")
  examples = {k: v for split in helpers.MAIN_SPLITS for k, v in data[split].items()}
  with_infiltrate = [k for k, e in examples.items() if infiltration in e["box_labels"]]
  assert with_infiltrate  # the fixture spells these boxes "Infiltrate", as the release does
  for image_id in with_infiltrate:
    assert examples[image_id]["labels"][infiltration] == 1
    np.testing.assert_array_equal(examples[image_id]["box_labels"], truth.box_labels[image_id])
