"""SIIM-ACR Pneumothorax Segmentation annotation files and their run-length encoding.

``train-rle.csv`` (columns ``ImageId, EncodedPixels``) has one row per pneumothorax region, or
one ``-1`` row for an image without pneumothorax; an image's mask is the union of its rows. The RLE
is *relative* and *column-major*: pairs ``(gap, length)``, where a run starts ``gap`` pixels after
the end of the previous run (the first after pixel 0), over the image flattened column by column
(Fortran order) at 1024 x 1024. The PNG variant replaces it by ``png_masks/`` and CSVs with
columns ``new_filename, ImageId, has_pneumo``.
"""

from __future__ import annotations

import collections
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from tfds_builders.cxr_base import tables

CLASS_NAMES = ("Pneumothorax",)
RLE_CSV = "train-rle.csv"
RLE_COLUMNS = ("ImageId", "EncodedPixels")
PNG_INDEX_COLUMNS = ("new_filename", "ImageId", "has_pneumo")
NO_MASK = "-1"
IMAGE_SIZE = (1024, 1024)  # every released DICOM; the RLE's pixel grid

# The official release (docs/datasets.md); the PNG variant gives only images and positives.
EXPECTED_COUNTS: dict[str, Any] = {
    "rows": 12_954,
    "images": 12_047,
    "positive_images": 2_669,
    "multi_row_images": 624,
}


def parse_rle_csv(path: pathlib.Path) -> tuple[dict[str, list[str]], dict[str, int]]:
  """``({ImageId: its RLE strings, [] if none}, {ImageId: number of rows})``."""
  rles: dict[str, list[str]] = {}
  rows: dict[str, int] = collections.Counter()
  for line, row in enumerate(tables.read_table(path, RLE_COLUMNS), start=2):
    rle = row["EncodedPixels"]
    if not rle:
      raise ValueError(f"{path}:{line}: empty EncodedPixels (use {NO_MASK} for no mask)")
    runs = rles.setdefault(row["ImageId"], [])
    rows[row["ImageId"]] += 1
    if rle != NO_MASK:
      runs.append(rle)
  return rles, dict(rows)


def rle_counts(rles: Mapping[str, Sequence[str]], rows: Mapping[str, int]) -> dict[str, Any]:
  """The counts of ``EXPECTED_COUNTS`` as ``train-rle.csv`` gives them."""
  return {
      "rows": sum(rows.values()),
      "images": len(rles),
      "positive_images": sum(bool(r) for r in rles.values()),
      "multi_row_images": sum(n > 1 for n in rows.values()),
  }


def rle_decode(rle: str, shape: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
  """The boolean ``shape`` mask of one relative, column-major RLE string.

  Raises:
    ValueError: an odd count of numbers, a negative number, or a run past the image.
  """
  try:
    values = np.array(rle.split(), np.int64)
  except ValueError:
    raise ValueError(f"RLE must hold integers, got {rle[:40]!r}") from None
  if values.size % 2 or (values < 0).any():
    raise ValueError(f"RLE must hold pairs of non-negative integers, got {rle[:40]!r}")
  gaps, lengths = values[0::2], values[1::2]
  ends = np.cumsum(gaps + lengths)
  starts = ends - lengths
  size = shape[0] * shape[1]
  if ends.size and ends[-1] > size:
    raise ValueError(f"RLE runs end at pixel {ends[-1]}, past the {shape} image's {size}")
  edges = np.zeros(size + 1, np.int64)
  np.add.at(edges, starts, 1)
  np.add.at(edges, ends, -1)
  return (np.cumsum(edges[:-1]) > 0).reshape(shape, order="F")


def decode_union(rles: Sequence[str], shape: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
  """The union of the masks of ``rles`` (all False for none)."""
  mask = np.zeros(shape, bool)
  for rle in rles:
    mask |= rle_decode(rle, shape)
  return mask


def parse_png_index(paths: Sequence[pathlib.Path]) -> dict[str, tuple[str, bool]]:
  """``{ImageId: (new_filename, has_pneumo)}`` from the PNG variant's CSVs."""
  out: dict[str, tuple[str, bool]] = {}
  file_names: set[str] = set()
  for path in paths:
    for line, row in enumerate(tables.read_table(path, PNG_INDEX_COLUMNS), start=2):
      image_id, name = row["ImageId"], row["new_filename"]
      if image_id in out or name in file_names:
        raise ValueError(f"{path}:{line}: duplicate image id {image_id!r} or file {name!r}")
      if row["has_pneumo"] not in ("0", "1"):
        raise ValueError(f"{path}:{line}: has_pneumo must be 0 or 1, got {row['has_pneumo']!r}")
      out[image_id] = (name, row["has_pneumo"] == "1")
      file_names.add(name)
  return out


def png_counts(index: Mapping[str, tuple[str, bool]]) -> dict[str, Any]:
  """The counts of ``EXPECTED_COUNTS`` the PNG variant's CSVs give."""
  return {"images": len(index), "positive_images": sum(p for _, p in index.values())}
