"""The linear probe's input whitening, and the probe against scikit-learn's logistic regression on
nearly collinear features (where a probe on standardised features is optimiser-limited)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from otcxr_jax.evaluation import linear_probe, whitening


def test_whitening_gives_unit_covariance_and_drops_degenerate_directions():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(500, 3)) @ np.diag([10.0, 1.0, 0.1])
  # Five features: the three above, a copy of the first and a constant (rank 3).
  x = np.concatenate([base, base[:, :1], np.full((500, 1), 7.0)], axis=1).astype(np.float32)
  mean, projection = whitening.whitening(x)
  assert projection.shape == (5, 3)
  white = (x - mean) @ projection
  np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(3), atol=1e-3)
  other = rng.normal(size=(7, 5)).astype(np.float32)
  w_train, w_other = whitening.whitened(x, other)
  np.testing.assert_allclose(w_train, white, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(w_other, (other - mean) @ projection, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="every one of the 2 features is constant"):
    whitening.whitening(np.ones((10, 2), np.float32))


def _collinear_splits(seed=0, scale=0.005):
  """Sixteen features dominated by one shared factor; the labels depend on two latent signals
  that reach the features at ``scale`` of the shared factor."""
  rng = np.random.default_rng(seed)
  mixing, loadings = rng.normal(size=(2, 16)), rng.uniform(0.5, 1.5, size=(1, 16))
  splits = {}
  for split, n in (("train", 3000), ("validation", 1000), ("test", 1000)):
    shared, signal = rng.normal(size=(n, 1)), rng.normal(size=(n, 2))
    y = (rng.random((n, 2)) < 1 / (1 + np.exp(-3 * signal))).astype(np.float32)
    x = shared @ loadings + scale * (signal @ mixing + 0.3 * rng.normal(size=(n, 16)))
    splits[split] = (x.astype(np.float32), y)
  return splits


def test_whitened_probe_matches_sklearn_on_nearly_collinear_features(tmp_path):
  splits = _collinear_splits()
  (tx, ty), (sx, sy) = splits["train"], splits["test"]
  reference = np.mean([
      roc_auc_score(sy[:, k], LogisticRegression(C=1e4, max_iter=10000, tol=1e-8)
                    .fit(tx.astype(np.float64), ty[:, k]).decision_function(sx.astype(np.float64)))
      for k in range(2)])
  kwargs = dict(workdir=tmp_path, weight_decays=(1e-4,), num_steps=300, batch_size=256,
                learning_rate=5e-2)
  white = linear_probe.run(splits, name="white", **kwargs)
  standardised = linear_probe.run(splits, name="standardised", whiten=False, **kwargs)
  assert reference > 0.9
  assert white.test_auc == pytest.approx(reference, abs=0.01)
  # The same optimiser and budget on standardised features stops far short.
  assert standardised.test_auc < reference - 0.1


def test_inputs_wider_than_the_whitening_limit_are_standardised(tmp_path, monkeypatch, capsys):
  splits = _collinear_splits()
  kwargs = dict(workdir=tmp_path, weight_decays=(1e-4,), num_steps=20, batch_size=256,
                learning_rate=5e-2)
  standardised = linear_probe.run(splits, name="standardised", whiten=False, **kwargs)
  monkeypatch.setattr(whitening, "MAX_FEATURES", 15)
  wide = linear_probe.run(splits, name="wide", **kwargs)
  assert "16 features, more than the 15 whitened at most" in capsys.readouterr().out
  np.testing.assert_allclose(wide.test_scores, standardised.test_scores, rtol=1e-5, atol=1e-6)


def test_fold_whitening_gives_the_same_affine_map():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(20, 6)) @ rng.normal(size=(6, 6))
  mean, projection = whitening.whitening(x)
  kernel, bias = rng.normal(size=(projection.shape[1], 3)), rng.normal(size=3)
  folded, offset = whitening.fold(kernel, bias, mean, projection)
  expected = ((x - mean) @ projection) @ kernel + bias
  np.testing.assert_allclose(x @ folded + offset, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("l2", [1e-3, 3e-1])
def test_probe_head_is_sklearns_l2_logistic_regression(tmp_path, l2):
  """With the whole split in one batch, the trained head is scikit-learn's logistic regression
  with ``C = 1 / (l2 * N)``, per class, weights and intercept; a stronger ``l2`` shrinks it."""
  rng = np.random.default_rng(1)
  n = 300
  x = rng.normal(size=(n, 4)).astype(np.float32)
  logits = x @ rng.normal(scale=1.5, size=(4, 2)) + np.array([0.3, -0.5])
  y = (rng.random((n, 2)) < 1 / (1 + np.exp(-logits))).astype(np.float32)
  head, _ = linear_probe.train_head(x, y, workdir=tmp_path, name="exact", num_steps=1500,
                                    batch_size=n, learning_rate=5e-2, weight_decay=l2, seed=0)
  kernel, bias = np.asarray(head.linear.kernel[...]), np.asarray(head.linear.bias[...])
  for k in range(2):
    reference = LogisticRegression(C=1 / (l2 * n), tol=1e-10, max_iter=10000).fit(x, y[:, k])
    np.testing.assert_allclose(kernel[:, k], reference.coef_[0], atol=5e-3)
    np.testing.assert_allclose(bias[k], reference.intercept_[0], atol=5e-3)
  if l2 > 0.1:  # strong enough to matter: the weights are far smaller than unregularised ones
    free = LogisticRegression(C=1e6, max_iter=10000).fit(x, y[:, 0]).coef_[0]
    assert np.linalg.norm(kernel[:, 0]) < 0.7 * np.linalg.norm(free)


def test_heads_trained_side_by_side_are_the_heads_trained_alone(tmp_path):
  """``train_heads`` (one run of the loop for the whole grid) gives, head by head, what
  ``train_head`` gives for each L2 strength alone: same start, same batches, same updates."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(400, 6)).astype(np.float32)
  y = (rng.random((400, 3)) < 1 / (1 + np.exp(-x[:, :3] * 2))).astype(np.float32)
  kwargs = dict(num_steps=120, batch_size=64, learning_rate=5e-2, seed=4)
  l2s = (1e-4, 1e-1, 3.0)
  heads, history = linear_probe.train_heads(x, y, workdir=tmp_path, name="side_by_side",
                                            weight_decays=l2s, **kwargs)
  assert len(heads) == 3 and {f"loss_wd{v:g}" for v in l2s} <= set(history[-1])
  norms = []
  for l2, head in zip(l2s, heads):
    alone, _ = linear_probe.train_head(x, y, workdir=tmp_path, name=f"alone_{l2:g}",
                                       weight_decay=l2, **kwargs)
    for got, want in ((head.linear.kernel, alone.linear.kernel),
                      (head.linear.bias, alone.linear.bias)):
      np.testing.assert_allclose(np.asarray(got[...]), np.asarray(want[...]), rtol=1e-4,
                                 atol=1e-5)
    norms.append(np.linalg.norm(np.asarray(head.linear.kernel[...])))
  assert norms[0] > norms[1] > norms[2]  # the heads did not share one strength


def test_a_choice_at_an_end_of_the_grid_is_reported(tmp_path, capsys):
  splits = _collinear_splits()
  kwargs = dict(workdir=tmp_path, num_steps=100, batch_size=256, learning_rate=5e-2)
  probe = linear_probe.run(splits, name="edge", weight_decays=(1e-4, 30.0), **kwargs)
  assert probe.weight_decay == 1e-4 and probe.val_by_weight_decay[1e-4] > 0.9
  assert probe.val_by_weight_decay[30.0] < probe.val_by_weight_decay[1e-4]
  assert ("edge: the weight decay chosen, 0.0001, is at an end of the grid (0.0001, 30.0)"
          in capsys.readouterr().out)
  linear_probe.run(splits, name="single", weight_decays=(1e-4,), **kwargs)
  assert "end of the grid" not in capsys.readouterr().out
