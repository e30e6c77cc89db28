"""AUC, ROC curve and Dice against scikit-learn and hand-computed values."""

import numpy as np
import pytest
from sklearn import metrics as skm

from otcxr_jax.evaluation import metrics


def _random_task(seed, n=300, k=6, tied=False):
  rng = np.random.default_rng(seed)
  labels = rng.random((n, k)) < rng.uniform(0.1, 0.6, size=k)
  if tied:  # few distinct integer scores: most comparisons are ties
    scores = rng.integers(0, 4, size=(n, k)) + labels * rng.integers(0, 2, size=(n, k))
  else:
    scores = rng.normal(size=(n, k)) + labels * rng.uniform(0.0, 1.5, size=k)
  return labels.astype(int), scores.astype(float)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_auc_matches_sklearn(seed, tied):
  labels, scores = _random_task(seed, tied=tied)
  expected = [skm.roc_auc_score(labels[:, c], scores[:, c]) for c in range(labels.shape[1])]
  np.testing.assert_allclose(metrics.per_class_auc(labels, scores), expected, rtol=0, atol=1e-12)
  assert metrics.mean_auc(labels, scores) == pytest.approx(np.mean(expected), abs=1e-12)


def test_roc_auc_hand_computed_with_ties():
  # Pairs (pos, neg): (0.8, 0.3) win, (0.8, 0.8) tie, (0.4, 0.3) win, (0.4, 0.8) loss -> 2.5 / 4.
  assert metrics.roc_auc([1, 0, 1, 0], [0.8, 0.3, 0.4, 0.8]) == pytest.approx(0.625)


def test_undefined_classes_are_nan_and_skipped_by_the_mean():
  labels, scores = _random_task(3, k=4)
  labels[:, 1] = 0
  labels[:, 3] = 1
  aucs = metrics.per_class_auc(labels, scores)
  assert np.isnan(aucs[[1, 3]]).all() and not np.isnan(aucs[[0, 2]]).any()
  expected = np.mean([skm.roc_auc_score(labels[:, c], scores[:, c]) for c in (0, 2)])
  assert metrics.mean_auc(labels, scores) == pytest.approx(expected, abs=1e-12)
  assert np.isnan(metrics.roc_auc(np.ones(5), np.arange(5.0)))
  assert np.isnan(metrics.mean_auc(np.zeros((5, 2)), np.ones((5, 2))))


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="y_true"):
    metrics.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="y_score"):
    metrics.roc_auc([0, 1, 1], [0.1, np.nan, 0.3])
  with pytest.raises(ValueError, match=r"\(N, K\)"):
    metrics.per_class_auc(np.zeros((4, 2)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match="alpha"):
    metrics.bootstrap_auc_ci(np.zeros((4, 1)), np.zeros((4, 1)), alpha=1.5)


def _naive_bootstrap(labels, scores, num_samples, seed):
  """Replicates by literally resampling rows and calling scikit-learn (NaN when undefined)."""
  rows = np.random.default_rng(seed).integers(0, len(labels), size=(num_samples, len(labels)))
  out = np.full((num_samples, labels.shape[1]), np.nan)
  for r, idx in enumerate(rows):
    for c in range(labels.shape[1]):
      if 0 < labels[idx, c].sum() < len(idx):
        out[r, c] = skm.roc_auc_score(labels[idx, c], scores[idx, c])
  return out


def test_bootstrap_matches_literal_resampling():
  labels, scores = _random_task(4, n=60, k=3, tied=True)
  labels[:, 2] = 0
  labels[:3, 2] = 1  # a rare class: some resamples draw none of its 3 positives
  num_samples, alpha = 150, 0.1
  ci = metrics.bootstrap_auc_ci(labels, scores, num_samples=num_samples, alpha=alpha, seed=7)
  reps = _naive_bootstrap(labels, scores, num_samples, seed=7)
  valid = ~np.isnan(reps)
  assert 0 < valid[:, 2].sum() < num_samples  # the skipping path is exercised
  np.testing.assert_array_equal(ci.num_valid, valid.sum(axis=0))
  q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
  for c in range(3):
    np.testing.assert_allclose(ci.per_class[c], np.percentile(reps[valid[:, c], c], q),
                               atol=1e-12)
  means = reps[valid.all(axis=1)].mean(axis=1)
  assert ci.num_valid_mean == means.size
  np.testing.assert_allclose(ci.mean, np.percentile(means, q), atol=1e-12)


def test_bootstrap_contains_estimate_and_is_reproducible():
  labels, scores = _random_task(5, n=200, k=3)
  labels[:, 1] = 1  # undefined on the full data: NaN interval, left out of the mean
  point = metrics.per_class_auc(labels, scores)
  ci = metrics.bootstrap_auc_ci(labels, scores, num_samples=200, seed=1)
  for c in (0, 2):
    assert ci.per_class[c, 0] < point[c] < ci.per_class[c, 1]
  assert np.isnan(ci.per_class[1]).all()
  assert ci.mean[0] < metrics.mean_auc(labels, scores) < ci.mean[1]
  again = metrics.bootstrap_auc_ci(labels, scores, num_samples=200, seed=1)
  other = metrics.bootstrap_auc_ci(labels, scores, num_samples=200, seed=2)
  np.testing.assert_array_equal(ci.per_class, again.per_class)
  assert ci.mean == again.mean
  assert not np.array_equal(ci.per_class[[0, 2]], other.per_class[[0, 2]])


@pytest.mark.parametrize("tied", [False, True])
def test_roc_curve_matches_sklearn(tied):
  labels, scores = _random_task(6, n=120, k=1, tied=tied)
  fpr, tpr, thresholds = metrics.roc_curve(labels[:, 0], scores[:, 0])
  sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(labels[:, 0], scores[:, 0],
                                                drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
  np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
  np.testing.assert_array_equal(thresholds, sk_thresholds)
  assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(labels[:, 0], scores[:, 0]))


def test_dice_hand_computed():
  true = np.zeros((4, 3, 3))
  pred = np.zeros((4, 3, 3))
  true[0, 0, :] = 1          # |T| = 3
  pred[0, 0, :2] = 0.9       # |P| = 3 (0.6 > 0.5 too), overlap 2
  pred[0, 2, 2] = 0.6
  pred[0, 1, 1] = 0.5        # not above the threshold
  true[1, 1, 1] = 1          # missed entirely -> 0
  pred[2, 2, 0] = 0.7        # false positive on an empty image -> 0
  # image 3: both empty -> empty_score
  np.testing.assert_allclose(metrics.dice(pred, true), [4 / 6, 0.0, 0.0, 1.0])
  np.testing.assert_allclose(metrics.dice(pred, true, empty_score=0.0)[3], 0.0)
  np.testing.assert_allclose(metrics.dice(pred, true, threshold=0.4)[0], 2 * 2 / (4 + 3))
  summary = metrics.dice_summary(pred, true)
  assert summary.mean_all == pytest.approx((4 / 6 + 1.0) / 4)
  assert summary.mean_positive == pytest.approx((4 / 6) / 2)
  assert (summary.num_images, summary.num_positive) == (4, 2)
  with pytest.raises(ValueError, match="same shape"):
    metrics.dice(pred, true[:, :2])


def test_paired_mean_auc_difference_against_a_sklearn_bootstrap():
  from sklearn.metrics import roc_auc_score
  rng = np.random.default_rng(4)
  y = (rng.random((120, 3)) < 0.3).astype(float)
  a = y + rng.normal(scale=0.8, size=y.shape)      # informative scores
  b = y + rng.normal(scale=2.0, size=y.shape)      # noisier scores
  point, low, high = metrics.paired_mean_auc_difference(y, a, b, num_samples=200, seed=7)
  mean_auc = lambda yy, ss: np.mean([roc_auc_score(yy[:, c], ss[:, c]) for c in range(3)])
  assert point == pytest.approx(mean_auc(y, a) - mean_auc(y, b))
  draws = np.random.default_rng(7).integers(0, 120, size=(200, 120))
  diffs = [mean_auc(y[r], a[r]) - mean_auc(y[r], b[r]) for r in draws
           if all(0 < y[r][:, c].sum() < 120 for c in range(3))]
  assert (low, high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-9)
  assert low > 0  # a is better on every resample's mean, by construction
  # Identical scores: zero difference with a zero-width interval.
  assert metrics.paired_mean_auc_difference(y, a, a, num_samples=50) == (0.0, 0.0, 0.0)


def test_paired_difference_over_runs_against_a_sklearn_bootstrap():
  """Two runs per side: the point is the mean of the runs' differences, and every resample draws
  the rows once for all four score sets (a hand-written bootstrap with scikit-learn's AUC)."""
  from sklearn.metrics import roc_auc_score
  rng = np.random.default_rng(5)
  y = (rng.random((100, 3)) < 0.35).astype(float)
  a = [y + rng.normal(scale=s, size=y.shape) for s in (0.7, 1.0)]
  b = [y + rng.normal(scale=s, size=y.shape) for s in (1.5, 2.5)]
  point, low, high = metrics.paired_mean_auc_difference_over_runs(y, a, b, num_samples=150,
                                                                  seed=3)
  mean_auc = lambda yy, ss: np.mean([roc_auc_score(yy[:, c], ss[:, c]) for c in range(3)])
  assert point == pytest.approx(np.mean([mean_auc(y, p) - mean_auc(y, q) for p, q in zip(a, b)]))
  draws = np.random.default_rng(3).integers(0, 100, size=(150, 100))
  diffs = [np.mean([mean_auc(y[r], p[r]) - mean_auc(y[r], q[r]) for p, q in zip(a, b)])
           for r in draws if all(0 < y[r][:, c].sum() < 100 for c in range(3))]
  assert (low, high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-9)
  # One run on each side is the single-run paired difference.
  assert (metrics.paired_mean_auc_difference_over_runs(y, a[:1], b[:1], num_samples=80)
          == metrics.paired_mean_auc_difference(y, a[0], b[0], num_samples=80))
  with pytest.raises(ValueError, match="same number"):
    metrics.paired_mean_auc_difference_over_runs(y, a, b[:1])


def test_seed_interval_is_the_student_t_interval():
  # 0.5, 0.6, 0.7: mean 0.6, sample std 0.1, t(0.975, 2) = 4.302653 (tables).
  mean, low, high = metrics.seed_interval([0.5, 0.6, np.nan, 0.7])
  half = 4.302653 * 0.1 / np.sqrt(3)
  assert (mean, low, high) == pytest.approx((0.6, 0.6 - half, 0.6 + half), abs=1e-6)
  assert metrics.seed_interval([0.7])[0] == 0.7 and np.isnan(metrics.seed_interval([0.7])[1])
  assert all(np.isnan(metrics.seed_interval([np.nan])))
