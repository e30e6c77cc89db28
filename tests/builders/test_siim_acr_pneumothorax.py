"""SIIM-ACR builder: nested JPEG-baseline DICOMs with train-rle.csv, and the PNG variant."""

import pytest

from builders import helpers, layouts

LAYOUTS = ("dicom", "png")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = {}
  for layout in LAYOUTS:
    root = tmp_path_factory.mktemp(f"siim_{layout}")
    truth = layouts.siim(root / "manual", layout=layout)
    builder = helpers.build("siim_acr_pneumothorax", root / "manual", root / "data")
    out[layout] = truth, builder, helpers.read_all(builder)
  return out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_masks_labels_and_images(built, layout):
  truth, builder, data = built[layout]
  examples = {k: v for split in helpers.MAIN_SPLITS for k, v in data[split].items()}
  helpers.check_examples(examples, truth, boxes=False, mask=True)
  helpers.check_report(builder, data)
  assert sum(e["mask"].any() for e in examples.values()) == sum(
      m.any() for m in truth.masks.values()) > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_splits(built, layout):
  truth, _, data = built[layout]
  helpers.check_splits(data, truth)


def test_images_of_one_patient_share_a_split(built):
  truth, _, data = built["dicom"]
  shared = [i for i, p in truth.patient.items() if p == "shared-patient"]
  assert len(shared) == 2
  assert [s for s in helpers.MAIN_SPLITS if set(shared) <= set(data[s])]
