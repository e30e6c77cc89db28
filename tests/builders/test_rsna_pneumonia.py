"""RSNA Pneumonia builder: DICOM release and PNG/JPEG converted variants."""

import pytest

from builders import helpers, layouts
from tfds_builders import rsna_pneumonia

LAYOUTS = ("dicom", "png")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = {}
  for layout in LAYOUTS:
    root = tmp_path_factory.mktemp(f"rsna_{layout}")
    truth = layouts.rsna(root / "manual", layout=layout)
    builder = helpers.build("rsna_pneumonia", root / "manual", root / "data")
    out[layout] = truth, builder, helpers.read_all(builder)
  return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_examples_match_the_annotations(built, layout):
  truth, builder, data = built[layout]
  examples = {k: v for split in helpers.MAIN_SPLITS for k, v in data[split].items()}
  helpers.check_examples(examples, truth, boxes=True, mask=False, extras=("class_info",))
  helpers.check_report(builder, data)
  assert max(len(e["boxes"]) for e in examples.values()) == 4
  assert builder.info.features["class_info"].names == list(layouts.RSNA_CLASS_INFO)
  assert rsna_pneumonia.CLASS_NAMES == ("Pneumonia",)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_splits(built, layout):
  truth, _, data = built[layout]
  helpers.check_splits(data, truth)


def test_split_is_the_same_for_both_layouts(built):
  dicom, png = ({s: set(d) for s, d in built[layout][2].items()} for layout in LAYOUTS)
  assert dicom == png
