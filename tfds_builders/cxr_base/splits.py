"""Seeded, patient-disjoint splits and nested label fractions.

Patients are ordered by ``sha256(f"{seed}/{purpose}/{key}")`` where ``key`` is the patient's
smallest image id: the order depends on nothing but the ids and the seed (no library random
generator, so it is the same on every machine and version), and it is the same whichever layout of
a download is read. Splits cut this order at counts ``round(fraction * n_patients)`` (halves round
up); label fractions are prefixes of a second such order over the training patients, so the 1%
subset lies inside the 10% subset, which lies inside the full training split.
"""

from __future__ import annotations

import collections
import hashlib
import math
from typing import Iterable, Mapping, Sequence

SEED = "otcxr-v1"
LABEL_FRACTIONS = (0.01, 0.10)
RANDOM_SPLIT = {"train": 0.70, "validation": 0.15, "test": 0.15}


def fraction_split_name(fraction: float) -> str:
  """The split of ``fraction`` of the training patients: 0.01 -> "train_1pct", 1 -> "train"."""
  if fraction == 1:
    return "train"
  percent = fraction * 100
  if not 0 < fraction < 1 or abs(percent - round(percent)) > 1e-9:
    raise ValueError(f"label fraction must be a whole percentage in (0, 1], got {fraction}")
  return f"train_{round(percent)}pct"


def round_half_up(x: float) -> int:
  return math.floor(x + 0.5)


def group_by_patient(image_patients: Mapping[str, str]) -> dict[str, list[str]]:
  """``{patient: sorted image ids}`` from ``{image id: patient}``."""
  groups: dict[str, list[str]] = collections.defaultdict(list)
  for image, patient in image_patients.items():
    groups[patient].append(image)
  return {patient: sorted(images) for patient, images in groups.items()}


def _ordered(patients: Mapping[str, Sequence[str]], purpose: str, seed: str) -> list[str]:
  def key(patient: str) -> str:
    return hashlib.sha256(f"{seed}/{purpose}/{min(patients[patient])}".encode()).hexdigest()
  return sorted(patients, key=key)


def split_patients(
    patients: Mapping[str, Sequence[str]], fractions: Mapping[str, float], *, seed: str = SEED
) -> dict[str, list[str]]:
  """Assigns whole patients to splits in the given fractions of the patient count.

  Args:
    patients: ``{patient: image ids}``.
    fractions: ``{split: fraction}`` summing to one; the first split gets the remainder, the
      others ``round(fraction * n)`` patients each, at least one where the fraction is positive
      and there are patients enough for one per split (a tiny cohort then has every split).
    seed: salt of the order.

  Returns:
    ``{split: sorted image ids}``.
  """
  if abs(sum(fractions.values()) - 1) > 1e-9:
    raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
  order = _ordered(patients, "split", seed)
  names = list(fractions)
  floor = 1 if len(order) >= len(names) else 0
  sizes = {name: max(floor if fractions[name] > 0 else 0, round_half_up(fractions[name] * len(order)))
           for name in names[1:]}
  sizes[names[0]] = len(order) - sum(sizes.values())
  out, start = {}, 0
  for name in reversed(names):
    chosen = order[start:start + sizes[name]]
    start += sizes[name]
    out[name] = sorted(image for patient in chosen for image in patients[patient])
  return {name: out[name] for name in names}


def label_fractions(
    patients: Mapping[str, Sequence[str]], train_images: Iterable[str],
    fractions: Sequence[float] = LABEL_FRACTIONS, *, seed: str = SEED
) -> dict[str, list[str]]:
  """Nested patient-level subsets of the training split.

  Args:
    patients: ``{patient: image ids}`` over the whole dataset.
    train_images: image ids of the training split (whole patients).
    fractions: fractions of the training patients, each subset keeps at least one patient.
    seed: salt of the order.

  Returns:
    ``{fraction_split_name(f): sorted image ids}``.
  """
  train = set(train_images)
  train_patients = {}
  for patient, images in patients.items():
    inside = sum(image in train for image in images)
    if inside and inside != len(images):
      raise ValueError(f"patient {patient} has images both inside and outside the training split")
    if inside:
      train_patients[patient] = images
  order = _ordered(train_patients, "label_fraction", seed)
  out = {}
  for fraction in sorted(fractions):
    count = max(1, round_half_up(fraction * len(order)))
    out[fraction_split_name(fraction)] = sorted(
        image for patient in order[:count] for image in train_patients[patient])
  return out
