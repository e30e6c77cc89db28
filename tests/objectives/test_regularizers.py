"""VICReg variance and covariance terms against a plain numpy reference and hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from otcxr_jax.objectives import regularizers


def _numpy_variance(z, gamma=1.0, eps=1e-4):
  z = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
  std = np.sqrt(z.var(axis=0, ddof=1) + eps)
  return np.mean(np.maximum(0.0, gamma - std))


def _numpy_covariance(z):
  z = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
  cov = np.cov(z, rowvar=False)
  off_diagonal = cov[~np.eye(cov.shape[0], dtype=bool)]
  return np.sum(off_diagonal**2) / z.shape[1]


def _embeddings(shape, seed=0):
  """Correlated features whose standard deviations straddle 1, so the hinge is partly active."""
  rng = np.random.default_rng(seed)
  d = shape[-1]
  z = rng.normal(size=shape) @ rng.normal(size=(d, d)) * 0.3 + rng.normal(size=d)
  return (z * np.linspace(0.2, 2.0, d)).astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 6), (4, 9, 6)])
def test_match_numpy_reference(shape):
  z = _embeddings(shape)
  np.testing.assert_allclose(regularizers.variance_loss(z), _numpy_variance(z), rtol=1e-5)
  np.testing.assert_allclose(
      regularizers.variance_loss(z, gamma=2.0, eps=1e-2),
      _numpy_variance(z, gamma=2.0, eps=1e-2),
      rtol=1e-5,
  )
  np.testing.assert_allclose(regularizers.covariance_loss(z), _numpy_covariance(z), rtol=1e-5)
  assert 0.0 < _numpy_variance(z) < 1.0


def test_batched_input_pools_batch_and_positions():
  z = _embeddings((3, 5, 4), seed=1)
  flat = z.reshape(15, 4)
  assert regularizers.variance_loss(z) == regularizers.variance_loss(flat)
  assert regularizers.covariance_loss(z) == regularizers.covariance_loss(flat)


def test_hand_computed_values():
  # A collapsed set: every standard deviation is sqrt(eps) = 0.01, so the hinge is 0.99.
  collapsed = jnp.ones((8, 3))
  np.testing.assert_allclose(regularizers.variance_loss(collapsed), 0.99, rtol=1e-6)
  grad = jax.grad(regularizers.variance_loss)(collapsed)
  assert np.all(np.isfinite(grad))
  # Two identical dimensions with unbiased variance v: off-diagonal entries v, loss 2 v^2 / 2.
  column = jnp.array([0.0, 1.0, 2.0, 3.0])
  duplicated = jnp.stack([column, column], axis=1)
  variance = float(np.var(column, ddof=1))
  np.testing.assert_allclose(regularizers.covariance_loss(duplicated), variance**2, rtol=1e-6)
  # Independent coordinates of an orthogonal design have zero covariance.
  orthogonal = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
  np.testing.assert_allclose(regularizers.covariance_loss(orthogonal), 0.0, atol=1e-7)


def test_low_precision_input_is_reduced_in_float32():
  z = jnp.asarray(_embeddings((64, 8), seed=2), jnp.bfloat16)
  exact = np.asarray(z, np.float32)
  assert regularizers.variance_loss(z).dtype == jnp.float32
  np.testing.assert_allclose(regularizers.covariance_loss(z), _numpy_covariance(exact), rtol=1e-5)


@pytest.mark.parametrize(
    "shape,match", [((6,), "shape"), ((2, 3, 4, 5), "shape"), ((1, 4), "at least 2 samples")]
)
def test_invalid_input_raises(shape, match):
  for loss in (regularizers.variance_loss, regularizers.covariance_loss):
    with pytest.raises(ValueError, match=match):
      loss(jnp.ones(shape))
