"""SIIM's relative column-major RLE: a hand-worked case and round trips through an encoder."""

import numpy as np
import pytest

from builders import layouts
from tfds_builders.siim_acr_pneumothorax import annotations as siim


def test_hand_worked_case():
  # 3 rows x 4 columns, pixels numbered down each column: index = column * 3 + row.
  # "1 2 4 1": pixels 1-2 (column 0, rows 1-2), then 4 after pixel 3: pixel 7 (column 2, row 1).
  expected = np.array([[0, 0, 0, 0],
                       [1, 0, 1, 0],
                       [1, 0, 0, 0]], bool)
  np.testing.assert_array_equal(siim.rle_decode("1 2 4 1", (3, 4)), expected)
  np.testing.assert_array_equal(siim.rle_decode("", (3, 4)), np.zeros((3, 4), bool))
  assert layouts.mask_to_rle(expected) == "1 2 4 1"


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_random_masks(seed):
  rng = np.random.default_rng(seed)
  shape = (1024, 1024) if seed == 0 else tuple(rng.integers(5, 90, 2))
  mask = rng.random(shape) < rng.uniform(0.05, 0.6)
  mask[0, 0], mask[-1, -1] = True, True  # runs touching both ends of the image
  np.testing.assert_array_equal(siim.rle_decode(layouts.mask_to_rle(mask), shape), mask)


def test_union_of_rows():
  rng = np.random.default_rng(0)
  masks = layouts.random_block_mask(rng, 3) + [np.zeros((1024, 1024), bool)]
  rles = [layouts.mask_to_rle(m) for m in masks]
  np.testing.assert_array_equal(siim.decode_union(rles), np.logical_or.reduce(masks))
  assert not siim.decode_union([]).any()


@pytest.mark.parametrize("rle, match", [
    ("1 2 3", "pairs"), ("1 -2", "pairs"), ("a b", "integers"), ("10 3", "past the")])
def test_malformed_rle(rle, match):
  with pytest.raises(ValueError, match=match):
    siim.rle_decode(rle, (3, 4))
