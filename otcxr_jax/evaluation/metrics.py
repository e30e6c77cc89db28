"""Classification and segmentation metrics in plain numpy: ROC AUC (with bootstrap intervals),
ROC curves and Dice.

An AUC is undefined when the labels hold a single value (no positive or no negative example); it is
then NaN, never 0.5 or 1.0, and means over classes skip it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import scipy.special  # the t quantile; scipy.stats alone takes a second to import
from numpy.typing import ArrayLike

_BOOTSTRAP_CHUNK = 64  # resamples drawn and scored at once (bounds memory to 64 x N counts)


def _binary_labels(y_true: ArrayLike, name: str) -> np.ndarray:
  y = np.asarray(y_true)
  if y.dtype != bool and not np.all((y == 0) | (y == 1)):
    raise ValueError(f"{name} must hold binary labels (0/1 or bool), got values "
                     f"{np.unique(y)[:10]}.")
  return y.astype(bool)


def _finite_scores(y_score: ArrayLike, name: str) -> np.ndarray:
  s = np.asarray(y_score, dtype=np.float64)
  if not np.all(np.isfinite(s)):
    raise ValueError(f"{name} must be finite (found NaN or inf).")
  return s


def _check_1d(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  y, s = _binary_labels(y_true, "y_true"), _finite_scores(y_score, "y_score")
  if y.ndim != 1 or s.shape != y.shape:
    raise ValueError(f"y_true and y_score must be 1-D of the same length, got shapes {y.shape} "
                     f"and {s.shape}.")
  return y, s


def _check_2d(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  y, s = _binary_labels(labels, "labels"), _finite_scores(scores, "scores")
  if y.ndim != 2 or s.shape != y.shape:
    raise ValueError(f"labels and scores must be (N, K) arrays of the same shape, got "
                     f"{y.shape} and {s.shape}.")
  return y, s


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
  """Area under the ROC curve of one binary class: the Mann-Whitney U statistic.

  ``AUC = (R₊ - n₊(n₊ + 1)/2) / (n₊ n₋)`` with ``R₊`` the sum of the positives' ranks among all
  scores, tied scores sharing their mean rank (midranks), i.e. ``P(s₊ > s₋) + ½ P(s₊ = s₋)``.

  Returns:
    The AUC, or NaN when ``y_true`` holds a single value.
  """
  y, s = _check_1d(y_true, y_score)
  n_pos = int(y.sum())
  n_neg = y.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)
  midranks = ends - 0.5 * (counts - 1)  # 1-based mean rank of each group of tied scores
  rank_sum = midranks[inverse][y].sum()
  return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_class_auc(labels: ArrayLike, scores: ArrayLike) -> np.ndarray:
  """`roc_auc` of each column of ``(N, K)`` labels and scores; ``(K,)``, NaN where undefined."""
  y, s = _check_2d(labels, scores)
  return np.array([roc_auc(y[:, k], s[:, k]) for k in range(y.shape[1])])


def _mean_defined(aucs: np.ndarray) -> float:
  defined = aucs[~np.isnan(aucs)]
  return float(defined.mean()) if defined.size else float("nan")


def mean_auc(labels: ArrayLike, scores: ArrayLike) -> float:
  """Mean of `per_class_auc` over the classes where it is defined; NaN if none is."""
  return _mean_defined(per_class_auc(labels, scores))


@dataclasses.dataclass(frozen=True)
class AucInterval:
  """Percentile bootstrap intervals of per-class and mean AUC.

  Attributes:
    per_class: ``(K, 2)`` ``(low, high)`` per class; NaN for a class undefined on the full data.
    mean: ``(low, high)`` of the mean AUC over the classes defined on the full data.
    num_valid: ``(K,)`` resamples in which each class was defined (and so entered its interval).
    num_valid_mean: resamples in which every class defined on the full data was defined.
  """

  per_class: np.ndarray
  mean: tuple[float, float]
  num_valid: np.ndarray
  num_valid_mean: int


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sorting order of ``scores`` and the start of each run of equal scores in that order."""
  order = np.argsort(scores, kind="stable")
  sorted_scores = scores[order]
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  return order, starts


def _weighted_auc(counts: np.ndarray, positive: np.ndarray, order: np.ndarray,
                  starts: np.ndarray) -> np.ndarray:
  """AUCs of ``R`` resamples given as multiplicities ``counts`` (R, N) of one class's examples.

  With ``P_g`` and ``N_g`` the numbers of positives and negatives drawn in tie group ``g``
  (ascending score), ``AUC = Σ_g P_g (Σ_{h<g} N_h + ½ N_g) / (Σ P_g Σ N_g)``, the Mann-Whitney
  statistic of the resampled data. NaN where a resample has no positive or no negative.
  """
  drawn = counts[:, order]
  pos = np.add.reduceat(drawn * positive[order], starts, axis=1)
  neg = np.add.reduceat(drawn * ~positive[order], starts, axis=1)
  below = np.cumsum(neg, axis=1) - neg
  numerator = np.sum(pos * (below + 0.5 * neg), axis=1)
  denominator = pos.sum(axis=1) * neg.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denominator > 0, numerator / denominator, np.nan)


def bootstrap_auc_ci(labels: ArrayLike, scores: ArrayLike, *, num_samples: int = 1000,
                     alpha: float = 0.05, seed: int = 0) -> AucInterval:
  """Percentile bootstrap confidence intervals of per-class and mean AUC.

  Resample ``r`` draws the rows ``rng.integers(0, N, size=(num_samples, N))[r]`` with
  ``rng = np.random.default_rng(seed)`` (whole examples, so the classes stay paired). A resample in
  which a class has a single label value is skipped for that class; the mean AUC of a resample is
  taken over the classes defined on the full data, and a resample in which one of them is
  undefined is skipped for the mean. Intervals are the ``alpha/2`` and ``1 - alpha/2`` percentiles
  of the kept resamples (NaN when none is kept).

  Args:
    labels: ``(N, K)`` binary labels.
    scores: ``(N, K)`` scores, higher meaning more likely positive.
    num_samples: number of bootstrap resamples.
    alpha: one minus the coverage of the interval.
    seed: seed of the resampling.
  """
  y, s = _check_2d(labels, scores)
  if not len(y):
    raise ValueError("bootstrap_auc_ci needs at least one example; labels is empty.")
  if not (isinstance(num_samples, (int, np.integer)) and num_samples >= 1):
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha!r}.")
  k = y.shape[1]
  defined = ~np.isnan(per_class_auc(y, s))
  replicates = _bootstrap_replicates(y, s, num_samples, seed)

  quantiles = [100 * alpha / 2, 100 * (1 - alpha / 2)]

  def interval(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not values.size:
      return float("nan"), float("nan")
    low, high = np.percentile(values, quantiles)
    return float(low), float(high)

  per_class = np.array([interval(replicates[:, c]) if defined[c] else (np.nan, np.nan)
                        for c in range(k)])
  num_valid = np.sum(~np.isnan(replicates), axis=0)
  means = _replicate_means(replicates, defined)
  return AucInterval(per_class=per_class, mean=interval(means), num_valid=num_valid,
                     num_valid_mean=int(np.sum(~np.isnan(means))))


def _bootstrap_replicates(y: np.ndarray, s: np.ndarray, num_samples: int, seed: int
                          ) -> np.ndarray:
  """``(num_samples, K)`` per-class AUCs of bootstrap resamples of the rows (NaN: undefined)."""
  n, k = y.shape
  groups = [_tie_groups(s[:, c]) for c in range(k)]
  rng = np.random.default_rng(seed)
  replicates = np.empty((num_samples, k))
  for first in range(0, num_samples, _BOOTSTRAP_CHUNK):
    size = min(_BOOTSTRAP_CHUNK, num_samples - first)
    rows = rng.integers(0, n, size=(size, n))
    flat = (rows + n * np.arange(size)[:, None]).ravel()
    counts = np.bincount(flat, minlength=size * n).reshape(size, n)
    for c, (order, starts) in enumerate(groups):
      replicates[first:first + size, c] = _weighted_auc(counts, y[:, c], order, starts)
  return replicates


def _replicate_means(replicates: np.ndarray, defined: np.ndarray) -> np.ndarray:
  """Mean over the ``defined`` classes of each resample (NaN if one of them is undefined)."""
  if not defined.any():
    return np.full(len(replicates), np.nan)
  kept = replicates[:, defined]
  return np.where(np.isnan(kept).any(axis=1), np.nan, kept.mean(axis=1))


def paired_mean_auc_difference(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, *,
                               num_samples: int = 1000, alpha: float = 0.05, seed: int = 0
                               ) -> tuple[float, float, float]:
  """``(difference, low, high)``: mean AUC of ``scores_a`` minus that of ``scores_b`` on the same
  examples, with a paired percentile-bootstrap interval (both scored on the same resamples of
  the rows, as :func:`bootstrap_auc_ci` draws them). Tighter than comparing two separate
  intervals: the images that are hard for both cancel."""
  return paired_mean_auc_difference_over_runs(labels, [scores_a], [scores_b],
                                              num_samples=num_samples, alpha=alpha, seed=seed)


def paired_mean_auc_difference_over_runs(labels: ArrayLike, scores_a: Sequence[ArrayLike],
                                         scores_b: Sequence[ArrayLike], *,
                                         num_samples: int = 1000, alpha: float = 0.05,
                                         seed: int = 0) -> tuple[float, float, float]:
  """``(difference, low, high)``: the mean over runs ``r`` of ``mean AUC(scores_a[r]) - mean
  AUC(scores_b[r])`` on the same examples (e.g. two methods' test scores at each of several
  seeds), with a paired percentile-bootstrap interval: every resample draws the rows once, as
  :func:`bootstrap_auc_ci` does, and scores every run of both sides on them. The interval is
  that of the test examples given these runs; the spread between runs is not in it. Each run's
  mean is over the classes defined for both of its sides."""
  if len(scores_a) != len(scores_b) or not len(scores_a):
    raise ValueError(f"scores_a and scores_b must hold the same number (>= 1) of runs, got "
                     f"{len(scores_a)} and {len(scores_b)}.")
  points, diffs = [], []
  for a, b in zip(scores_a, scores_b):
    y, a = _check_2d(labels, a)
    _, b = _check_2d(labels, b)
    defined = ~np.isnan(per_class_auc(y, a)) & ~np.isnan(per_class_auc(y, b))
    points.append(np.mean(per_class_auc(y, a)[defined]) - np.mean(per_class_auc(y, b)[defined])
                  if defined.any() else np.nan)
    diffs.append(_replicate_means(_bootstrap_replicates(y, a, num_samples, seed), defined)
                 - _replicate_means(_bootstrap_replicates(y, b, num_samples, seed), defined))
  diff = np.mean(diffs, axis=0)
  diff = diff[~np.isnan(diff)]
  point = float(np.mean(points))
  if not diff.size:
    return point, float("nan"), float("nan")
  low, high = np.percentile(diff, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return point, float(low), float(high)


def seed_interval(values: ArrayLike, alpha: float = 0.05) -> tuple[float, float, float]:
  """``(mean, low, high)``: the mean of ``values`` (one per seed, NaN left out) and its Student-t
  interval, ``mean -+ t(1 - alpha/2, n - 1) * std / sqrt(n)`` with the sample standard deviation
  (NaN bounds for fewer than two values)."""
  x = np.asarray(values, np.float64).reshape(-1)
  x = x[~np.isnan(x)]
  if not x.size:
    return float("nan"), float("nan"), float("nan")
  mean = float(x.mean())
  if x.size < 2:
    return mean, float("nan"), float("nan")
  half = float(scipy.special.stdtrit(x.size - 1, 1 - alpha / 2) * x.std(ddof=1) / np.sqrt(x.size))
  return mean, mean - half, mean + half


def roc_curve(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """ROC curve: false- and true-positive rates of ``score >= threshold`` at every distinct score.

  Thresholds decrease from ``+inf`` (nothing predicted positive, the point (0, 0)) through every
  distinct score, as scikit-learn's ``roc_curve(drop_intermediate=False)``. A rate whose class is
  absent (no negatives for fpr, no positives for tpr) is NaN.

  Returns:
    ``(fpr, tpr, thresholds)``, each of length (number of distinct scores + 1).
  """
  y, s = _check_1d(y_true, y_score)
  if not y.size:
    raise ValueError("roc_curve needs at least one example; y_true is empty.")
  order = np.argsort(-s, kind="stable")
  sorted_scores, sorted_y = s[order], y[order]
  # Last index of each run of equal scores: a threshold admits its whole tie group at once.
  ends = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), s.size - 1]
  tps = np.r_[0, np.cumsum(sorted_y)[ends]]
  fps = np.r_[0, (ends + 1) - tps[1:]]
  with np.errstate(invalid="ignore", divide="ignore"):
    tpr = tps / tps[-1] if tps[-1] else np.full(tps.shape, np.nan)
    fpr = fps / fps[-1] if fps[-1] else np.full(fps.shape, np.nan)
  return fpr, tpr, np.r_[np.inf, sorted_scores[ends]]


@dataclasses.dataclass(frozen=True)
class DiceSummary:
  """Mean Dice over all images and over positive images (non-empty true mask; NaN if none)."""

  mean_all: float
  mean_positive: float
  num_images: int
  num_positive: int


def _binary_masks(pred_mask: ArrayLike, true_mask: ArrayLike,
                  threshold: float) -> tuple[np.ndarray, np.ndarray]:
  pred, true = np.asarray(pred_mask), np.asarray(true_mask)
  if pred.shape != true.shape or pred.ndim < 2:
    raise ValueError(f"pred_mask and true_mask must have the same shape (N, ...) with a leading "
                     f"image axis, got {pred.shape} and {true.shape}.")
  n = pred.shape[0]
  return (pred > threshold).reshape(n, -1), (true > 0.5).reshape(n, -1)


def dice(pred_mask: ArrayLike, true_mask: ArrayLike, *, threshold: float = 0.5,
         empty_score: float = 1.0) -> np.ndarray:
  """Dice coefficient ``2|P ∩ T| / (|P| + |T|)`` of each image.

  Args:
    pred_mask: ``(N, ...)`` predicted probabilities or binary masks; a pixel is predicted positive
      when ``pred_mask > threshold``.
    true_mask: ``(N, ...)`` reference masks, positive where ``> 0.5``.
    threshold: binarisation threshold of ``pred_mask``.
    empty_score: Dice of an image whose predicted and true masks are both empty (the SIIM-ACR
      convention scores a correct "no pneumothorax" as 1).

  Returns:
    ``(N,)`` Dice per image.
  """
  pred, true = _binary_masks(pred_mask, true_mask, threshold)
  overlap = np.sum(pred & true, axis=1)
  total = np.sum(pred, axis=1) + np.sum(true, axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, 2.0 * overlap / total, float(empty_score))


def dice_summary(pred_mask: ArrayLike, true_mask: ArrayLike, *, threshold: float = 0.5,
                 empty_score: float = 1.0) -> DiceSummary:
  """Mean `dice` over all images and over the images with a non-empty true mask."""
  scores = dice(pred_mask, true_mask, threshold=threshold, empty_score=empty_score)
  _, true = _binary_masks(pred_mask, true_mask, threshold)
  positive = true.any(axis=1)
  return DiceSummary(
      mean_all=float(scores.mean()) if scores.size else float("nan"),
      mean_positive=float(scores[positive].mean()) if positive.any() else float("nan"),
      num_images=int(scores.size), num_positive=int(positive.sum()))
