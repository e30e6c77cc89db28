"""The OTCXR objective: composition of its parts, jit/grad, configuration validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from otcxr_jax.objectives import ot, otcxr, regularizers

SOLVER = dict(epsilon=0.05, num_iters=30, cost="cosine", lse_mode=None, grad_mode="fixed")


def _views(seed=0, batch=2, n=6, m=4, d=5):
  rng = np.random.default_rng(seed)
  q_s = rng.normal(size=(batch, n, d)).astype(np.float32)
  q_t = rng.normal(size=(batch, m, d)).astype(np.float32)
  return jnp.asarray(q_s), jnp.asarray(q_t)


@jax.jit
def _loss_and_parts(q_s, q_t, alpha, beta, eta):
  loss, aux = otcxr.otcxr_loss(q_s, q_t, alpha=alpha, beta=beta, eta=eta, **SOLVER)
  parts = {
      "ot": ot.batched_transport(q_s, q_t, **SOLVER),
      "var": (regularizers.variance_loss(q_s), regularizers.variance_loss(q_t)),
      "cov": (regularizers.covariance_loss(q_s), regularizers.covariance_loss(q_t)),
  }
  return loss, aux, parts


def test_loss_is_weighted_sum_of_parts():
  q_s, q_t = _views()
  alpha, beta, eta = 2.0, 3.0, 0.5
  loss, aux, parts = _loss_and_parts(q_s, q_t, alpha, beta, eta)
  result = parts["ot"]
  var, cov = sum(parts["var"]), sum(parts["cov"])
  expected = alpha * np.mean(result.loss) + beta * var + eta * cov
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(aux["loss"], loss, rtol=1e-7)
  np.testing.assert_allclose(aux["ot"], np.mean(result.loss), rtol=1e-6)
  np.testing.assert_allclose(aux["var"], var, rtol=1e-6)
  np.testing.assert_allclose(aux["cov"], cov, rtol=1e-6)
  np.testing.assert_allclose(aux["marginal_error"], np.mean(result.marginal_error), rtol=1e-6)
  np.testing.assert_allclose(aux["plan_entropy"], np.mean(result.entropy), rtol=1e-6)
  np.testing.assert_allclose(aux[otcxr.PLAN_KEY], result.plan, rtol=1e-6)
  assert set(aux) == set(otcxr.METRIC_KEYS) | {otcxr.PLAN_KEY}
  assert all(aux[key].shape == () for key in otcxr.METRIC_KEYS)
  assert aux[otcxr.PLAN_KEY].shape == (2, 6, 4)
  # Every term contributes: the parts are non-zero on random views.
  assert min(float(np.mean(result.loss)), float(var), float(cov)) > 0


def test_jit_and_grad():
  q_s, q_t = _views(seed=1)
  config = otcxr.OTCXRObjectiveConfig(num_iters=30).validate()

  @jax.jit
  def value_and_grads(q_s, q_t, alpha):
    kwargs = dict(dataclasses.asdict(config), alpha=alpha)
    loss_fn = lambda q_s, q_t: otcxr.otcxr_loss(q_s, q_t, **kwargs)
    return jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(q_s, q_t)

  (loss, aux), grads = value_and_grads(q_s, q_t, config.alpha)
  expected = _loss_and_parts(q_s, q_t, config.alpha, config.beta, config.eta)[0]
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  for g, q in zip(grads, (q_s, q_t)):
    assert g.shape == q.shape
    assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0)
  # The weights may be traced; the OT term must contribute to the gradient.
  (_, aux_no_ot), grads_no_ot = value_and_grads(q_s, q_t, 0.0)
  np.testing.assert_allclose(aux_no_ot["loss"], aux["loss"] - config.alpha * aux["ot"], rtol=1e-5)
  assert np.abs(np.asarray(grads[0]) - np.asarray(grads_no_ot[0])).max() > 1e-3


def test_default_config_is_valid_and_frozen():
  config = otcxr.OTCXRObjectiveConfig()
  assert config.validate() is config
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.alpha = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "field,value",
    [
        ("alpha", -1.0),
        ("beta", float("nan")),
        ("eta", "1"),
        ("epsilon", 0.0),
        ("epsilon", float("inf")),
        ("num_iters", 0),
        ("num_iters", 2.5),
        ("cost", "l1"),
        ("lse_mode", "yes"),
        ("lse_mode", 1),
        ("grad_mode", "danskin"),
    ],
)
def test_invalid_config_names_the_field(field, value):
  config = dataclasses.replace(otcxr.OTCXRObjectiveConfig(), **{field: value})
  with pytest.raises(ValueError, match=rf"OTCXRObjectiveConfig\.{field}\b"):
    config.validate()
