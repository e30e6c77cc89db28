"""Patient-disjoint seeded splits and nested label fractions."""

import math

import numpy as np
import pytest

from tfds_builders.cxr_base import splits


def _patients(n_patients: int, seed: int = 0) -> dict[str, list[str]]:
  """Patients with 1-4 images each."""
  rng = np.random.default_rng(seed)
  return {f"p{p}": [f"p{p}_img{i}" for i in range(int(rng.integers(1, 5)))]
          for p in range(n_patients)}


def _patient_of(patients):
  return {image: p for p, images in patients.items() for image in images}


@pytest.mark.parametrize("n", [7, 20, 1001])
def test_random_split_is_patient_disjoint_with_exact_sizes(n):
  patients = _patients(n)
  out = splits.split_patients(patients, splits.RANDOM_SPLIT)
  owner = _patient_of(patients)
  chosen = {name: {owner[i] for i in ids} for name, ids in out.items()}
  assert set().union(*out.values()) == set(owner)
  assert sum(len(ids) for ids in out.values()) == len(owner)  # no image twice
  assert not (chosen["train"] & chosen["validation"] or chosen["train"] & chosen["test"]
              or chosen["validation"] & chosen["test"])
  for name in ("validation", "test"):
    assert len(chosen[name]) == math.floor(0.15 * n + 0.5)
    assert all(set(patients[p]) <= set(out[name]) for p in chosen[name])  # whole patients
  assert len(chosen["train"]) == n - 2 * math.floor(0.15 * n + 0.5)


@pytest.mark.parametrize("n,sizes", [(3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)),
                                     (2, (2, 0, 0))])
def test_a_tiny_cohort_has_every_split_where_it_can(n, sizes):
  # 0.15 * n rounds to 0 below 4 patients; each split still gets one when there are enough
  out = splits.split_patients(_patients(n), splits.RANDOM_SPLIT)
  owner = _patient_of(_patients(n))
  assert tuple(len({owner[i] for i in out[name]}) for name in ("train", "validation", "test")) \
      == sizes


def test_split_depends_only_on_ids_and_seed():
  patients = _patients(200)
  reordered = dict(reversed(list(patients.items())))
  a = splits.split_patients(patients, splits.RANDOM_SPLIT)
  assert a == splits.split_patients(reordered, splits.RANDOM_SPLIT)
  assert a != splits.split_patients(patients, splits.RANDOM_SPLIT, seed="another")
  # Renaming patients keeps the split: the order is keyed by the patients' image ids.
  renamed = {f"x{p}": images for p, images in patients.items()}
  assert a == splits.split_patients(renamed, splits.RANDOM_SPLIT)


def test_split_fractions_must_sum_to_one():
  with pytest.raises(ValueError, match="sum to 1"):
    splits.split_patients(_patients(5), {"train": 0.7, "test": 0.2})


def test_label_fractions_are_nested_patient_subsets_of_train():
  patients = _patients(3000)
  out = splits.split_patients(patients, splits.RANDOM_SPLIT)
  fractions = splits.label_fractions(patients, out["train"])
  owner = _patient_of(patients)
  train_patients = {owner[i] for i in out["train"]}
  one, ten = set(fractions["train_1pct"]), set(fractions["train_10pct"])
  assert one < ten < set(out["train"])
  for ids, fraction in ((one, 0.01), (ten, 0.10)):
    chosen = {owner[i] for i in ids}
    assert len(chosen) == math.floor(fraction * len(train_patients) + 0.5)
    assert all(set(patients[p]) <= ids for p in chosen)
  # A different draw from the one that chose the splits.
  assert fractions == splits.label_fractions(patients, out["train"])


def test_label_fractions_keep_at_least_one_patient_and_refuse_split_patients():
  patients = {"a": ["a1", "a2"], "b": ["b1"], "c": ["c1"]}
  out = splits.label_fractions(patients, ["a1", "a2", "b1"])
  assert len(out["train_1pct"]) >= 1
  assert set(out["train_1pct"]) <= set(out["train_10pct"]) <= {"a1", "a2", "b1"}
  with pytest.raises(ValueError, match="patient a has images both inside and outside"):
    splits.label_fractions(patients, ["a1", "b1"])


def test_fraction_split_names():
  assert splits.fraction_split_name(0.01) == "train_1pct"
  assert splits.fraction_split_name(0.1) == "train_10pct"
  assert splits.fraction_split_name(1.0) == "train"
  for bad in (0.0, 0.015, 1.5):
    with pytest.raises(ValueError, match="whole percentage"):
      splits.fraction_split_name(bad)
