"""A classification run's test scores, saved next to its ``metrics.json`` for reports.

``<workdir>/test_scores.npz`` holds ``labels`` and ``scores`` ``(N, K)`` float32 (probabilities,
rows in test-split order) and ``class_names`` ``(K,)``; ``modes/report.py`` draws ROC curves
from it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import numpy as np
from etils import epath

SCORES_FILE = "test_scores.npz"


class SavedScores(NamedTuple):
  labels: np.ndarray
  scores: np.ndarray
  class_names: tuple[str, ...]


def save_scores(workdir: str | epath.PathLike, labels: np.ndarray, scores: np.ndarray,
                class_names: Sequence[str]) -> epath.Path:
  """Writes ``<workdir>/test_scores.npz`` (process 0 only) and returns its path."""
  labels, scores = np.asarray(labels, np.float32), np.asarray(scores, np.float32)
  if labels.shape != scores.shape or labels.ndim != 2 or labels.shape[1] != len(class_names):
    raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be (N, K) with K = "
                     f"{len(class_names)} classes")
  path = epath.Path(workdir) / SCORES_FILE
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
      np.savez_compressed(f, labels=labels, scores=scores, class_names=np.asarray(class_names))
  return path


def load_scores(workdir: str | epath.PathLike) -> SavedScores | None:
  """The scores :func:`save_scores` wrote in ``workdir``, or None if it wrote none."""
  path = epath.Path(workdir) / SCORES_FILE
  if not path.exists():
    return None
  with path.open("rb") as f, np.load(f) as data:
    return SavedScores(data["labels"], data["scores"], tuple(str(c) for c in data["class_names"]))
