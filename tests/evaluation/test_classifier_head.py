"""The standardising linear head of fine-tuning: its fixed feature statistics, the affine map of
raw features it equals, and its export (folded into a plain linear layer) and import."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from otcxr_jax.evaluation import classifier
from otcxr_jax.export import state_dict as sd
from otcxr_jax.models import LinearClassifier, ResNet
from otcxr_jax.models.heads import FeatureStatistics


def _head(seed=0, features=16, classes=3):
  rng = np.random.default_rng(seed)
  head = LinearClassifier(features, classes, standardize=True, rngs=nnx.Rngs(seed))
  head.linear.kernel[...] = jnp.asarray(rng.normal(size=(features, classes)), jnp.float32)
  head.linear.bias[...] = jnp.asarray(rng.normal(size=classes), jnp.float32)
  mean, std = rng.uniform(0.5, 2.0, features), rng.uniform(0.005, 0.05, features)
  std[3] = 0.0  # a constant feature: centred, not scaled
  head.set_standardization(mean, std)
  x = mean + std * rng.normal(size=(7, features))
  x[:, 3] += 0.01  # off its training value, yet not blown up by the zero deviation
  return head, mean, std, x.astype(np.float32)


def test_head_standardises_with_fixed_statistics():
  head, mean, std, x = _head()
  scale = np.where(std > 0, std, 1.0)
  kernel, bias = np.asarray(head.linear.kernel[...]), np.asarray(head.linear.bias[...])
  np.testing.assert_allclose(head(jnp.asarray(x)), ((x - mean) / scale) @ kernel + bias,
                             rtol=1e-5, atol=1e-4)
  folded_kernel, folded_bias = (np.asarray(a, np.float64) for a in head.affine())
  np.testing.assert_allclose(x @ folded_kernel + folded_bias,
                             ((x - mean) / scale) @ kernel + bias, rtol=1e-4, atol=1e-3)
  # Statistics are variables of their own type, not parameters: no optimiser sees them.
  assert {p for p, _ in nnx.to_flat_state(nnx.state(head, FeatureStatistics))} == {
      ("feature_mean",), ("feature_std",)}
  assert {p for p, _ in nnx.to_flat_state(nnx.state(head, nnx.Param))} == {
      ("linear", "kernel"), ("linear", "bias")}


def test_a_tracking_head_centres_a_training_batch_on_its_own_mean_and_tracks_it():
  rng = np.random.default_rng(2)
  head = LinearClassifier(5, 2, standardize=True, track_mean=True, momentum=0.75,
                          rngs=nnx.Rngs(0))
  mean, std = rng.uniform(1.0, 2.0, 5), rng.uniform(0.01, 0.02, 5)
  head.set_standardization(mean, std)
  kernel, bias = np.asarray(head.linear.kernel[...]), np.asarray(head.linear.bias[...])
  # Every image moved by the same shift, ten times the features' spread.
  x = (mean + std * rng.normal(size=(6, 5)) + 10 * std).astype(np.float32)
  batch_mean = x.astype(np.float64).mean(0)
  # Evaluation mode (the default) reads the fixed mean: the shift moves every logit.
  np.testing.assert_allclose(head(jnp.asarray(x)), ((x - mean) / std) @ kernel + bias,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(head.feature_mean[...], mean, rtol=1e-6)
  # Training mode centres on the batch's own mean (the shift cancels) and moves the running
  # mean a quarter of the way towards it.
  head.train()
  np.testing.assert_allclose(head(jnp.asarray(x)), ((x - batch_mean) / std) @ kernel + bias,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(head.feature_mean[...], 0.75 * mean + 0.25 * batch_mean, rtol=1e-6)
  head.eval()
  running = 0.75 * mean + 0.25 * batch_mean
  np.testing.assert_allclose(head(jnp.asarray(x)), ((x - running) / std) @ kernel + bias,
                             rtol=1e-4, atol=1e-3)
  with pytest.raises(ValueError, match="track_mean=True needs standardize=True"):
    LinearClassifier(5, 2, track_mean=True, rngs=nnx.Rngs(0))


def test_the_tracked_mean_is_the_global_batch_mean_over_sharded_devices():
  from otcxr_jax.training import sharding
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 4  # tests/conftest.py
  rng = np.random.default_rng(4)
  head = LinearClassifier(3, 2, standardize=True, track_mean=True, momentum=0.5,
                          rngs=nnx.Rngs(0))
  head.set_standardization(np.zeros(3), np.ones(3))
  # Each device's quarter of the batch has its own offset: a per-device mean would differ.
  x = rng.normal(size=(8, 3)) + np.repeat(np.arange(4.0), 2)[:, None]
  graphdef, state = nnx.split(head)

  @jax.jit
  def train_step(state, x):
    model = nnx.merge(graphdef, state, copy=True)
    model.train()
    logits = model(x)
    return logits, nnx.state(model)

  logits, new_state = train_step(sharding.replicate(state, mesh),
                                 jax.device_put(jnp.asarray(x, jnp.float32),
                                                sharding.batch_sharded(mesh)))
  kernel, bias = np.asarray(head.linear.kernel[...]), np.asarray(head.linear.bias[...])
  np.testing.assert_allclose(logits, (x - x.mean(0)) @ kernel + bias, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new_state["feature_mean"][...], 0.5 * x.mean(0), rtol=1e-5,
                             atol=1e-6)


def test_a_whitening_head_reads_the_standardised_features_through_its_projection():
  rng = np.random.default_rng(3)
  head = LinearClassifier(6, 2, standardize=True, whiten=True, rngs=nnx.Rngs(0))
  mean, std = rng.uniform(1.0, 2.0, 6), rng.uniform(0.01, 0.02, 6)
  head.set_standardization(mean, std)
  x = (mean + std * rng.normal(size=(4, 6))).astype(np.float32)
  kernel, bias = np.asarray(head.linear.kernel[...]), np.asarray(head.linear.bias[...])
  # Identity until set.
  np.testing.assert_allclose(head(jnp.asarray(x)), ((x - mean) / std) @ kernel + bias,
                             rtol=1e-4, atol=1e-4)
  projection = rng.normal(size=(6, 4))  # four kept directions: padded with two zero columns
  head.set_projection(projection)
  np.testing.assert_array_equal(np.asarray(head.feature_projection[...])[:, 4:], 0.0)
  expected = ((x - mean) / std) @ projection @ kernel[:4] + bias
  np.testing.assert_allclose(head(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-3)
  folded_kernel, folded_bias = (np.asarray(a, np.float64) for a in head.affine())
  np.testing.assert_allclose(x @ folded_kernel + folded_bias, expected, rtol=1e-3, atol=1e-2)
  with pytest.raises(ValueError, match=r"projection must be a finite \(6, r\) array"):
    head.set_projection(np.ones((6, 7)))
  with pytest.raises(ValueError, match="built with whiten=False"):
    LinearClassifier(6, 2, standardize=True, rngs=nnx.Rngs(0)).set_projection(projection)
  with pytest.raises(ValueError, match="whiten=True needs standardize=True"):
    LinearClassifier(6, 2, whiten=True, rngs=nnx.Rngs(0))


def test_a_new_head_is_the_identity_on_features_until_statistics_are_set():
  plain = LinearClassifier(4, 2, rngs=nnx.Rngs(1))
  standardising = LinearClassifier(4, 2, standardize=True, rngs=nnx.Rngs(1))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  np.testing.assert_array_equal(standardising(x), plain(x))
  with pytest.raises(ValueError, match="built with standardize=False"):
    plain.set_standardization(np.zeros(4), np.ones(4))


@pytest.mark.parametrize("mean, std, message", [
    (np.zeros(3), np.ones(4), r"mean must be a finite \(4,\) array, got shape \(3,\)"),
    (np.zeros(4), np.full(4, np.nan), r"std must be a finite \(4,\) array"),
    (np.zeros(4), -np.ones(4), r"std must be >= 0"),
])
def test_bad_statistics_are_refused(mean, std, message):
  head = LinearClassifier(4, 2, standardize=True, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=message):
    head.set_standardization(mean, std)


def test_feature_statistics_are_numpys_mean_and_std():
  x = np.random.default_rng(0).normal(1.0, 0.01, size=(50, 6)).astype(np.float32)
  mean, std = classifier.feature_statistics(x)
  np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-7)
  np.testing.assert_allclose(std, x.astype(np.float64).std(0), rtol=1e-6)
  with pytest.raises(ValueError, match=r"non-empty \(N, C\)"):
    classifier.feature_statistics(np.zeros((0, 6)))


def test_export_folds_the_statistics_into_a_plain_linear_layer():
  encoder = ResNet(18, width=0.125, in_channels=1, rngs=nnx.Rngs(0))
  head, _, _, x = _head(features=encoder.num_features)
  tensors = sd.to_state_dict(encoder, head)
  expected = np.asarray(head(jnp.asarray(x)), np.float64)
  # What PyTorch's fc computes: x W^T + b.
  np.testing.assert_allclose(x @ tensors["fc.weight"].T.astype(np.float64) + tensors["fc.bias"],
                             expected, rtol=1e-4, atol=1e-3)
  for target in (LinearClassifier(encoder.num_features, 3, rngs=nnx.Rngs(5)),
                 LinearClassifier(encoder.num_features, 3, standardize=True, rngs=nnx.Rngs(5))):
    if target.standardize:
      target.set_standardization(np.full(encoder.num_features, 7.0),
                                 np.full(encoder.num_features, 3.0))
    sd.load_state_dict(tensors, ResNet(18, width=0.125, in_channels=1, rngs=nnx.Rngs(1)), target)
    np.testing.assert_allclose(target(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-3)
