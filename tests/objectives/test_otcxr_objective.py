"""The OTCXR objective: composition of its parts, jit/grad, configuration validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from otcxr_jax.objectives import ot, otcxr, regularizers

SOLVER = dict(epsilon=0.05, num_iters=30, cost="cosine", lse_mode=None, grad_mode="fixed")
# Tokens as they are (the default centres them): the OT term is ot.batched_transport of q itself.
RAW = dict(SOLVER, center_tokens=False)


def _views(seed=0, batch=2, n=6, m=4, d=5):
  rng = np.random.default_rng(seed)
  q_s = rng.normal(size=(batch, n, d)).astype(np.float32)
  q_t = rng.normal(size=(batch, m, d)).astype(np.float32)
  return jnp.asarray(q_s), jnp.asarray(q_t)


# Every call below goes through one jitted loss: its Sinkhorn loop is compiled once per
# configuration and shape (run eagerly, each call traced and compiled the loop anew).
_loss = jax.jit(otcxr.otcxr_loss, static_argnames=(
    "epsilon", "num_iters", "cost", "lse_mode", "grad_mode", "center_tokens", "center_positions",
    "location_weight", "varcov_per_position", "alignment", "global_weight", "teacher_tau"))


@jax.jit
def _loss_and_parts(q_s, q_t, alpha, beta, eta):
  loss, aux = otcxr.otcxr_loss(q_s, q_t, alpha=alpha, beta=beta, eta=eta, **RAW)
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
  config = otcxr.OTCXRObjectiveConfig(num_iters=30, center_tokens=False).validate()

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


def test_defaults_are_the_run_configs():
  """One set of defaults: ``config.objective`` of ``config_lib.base_config`` is the objective's
  own (tokens centred)."""
  from otcxr_jax import config_lib
  assert dataclasses.asdict(otcxr.OTCXRObjectiveConfig()) == dict(config_lib.base_config().objective)
  assert otcxr.OTCXRObjectiveConfig().center_tokens


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
        ("teacher_tau", 1.0),
        ("teacher_tau", -0.1),
        ("teacher_tau", True),
    ],
)
def test_invalid_config_names_the_field(field, value):
  config = dataclasses.replace(otcxr.OTCXRObjectiveConfig(), **{field: value})
  with pytest.raises(ValueError, match=rf"OTCXRObjectiveConfig\.{field}\b"):
    config.validate()


def _numpy_vicreg_terms(z, gamma=1.0, eps=1e-4):
  """VICReg variance and covariance of (N, D) samples, in float64 numpy."""
  z = np.asarray(z, np.float64)
  std = np.sqrt(z.var(axis=0, ddof=1) + eps)
  var = np.mean(np.maximum(0.0, gamma - std))
  c = np.cov(z, rowvar=False)
  cov = (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / z.shape[1]
  return var, cov


def test_centred_tokens_ignore_a_per_image_offset():
  q_s, q_t = _views(n=5, m=5)
  offset = jnp.asarray(np.random.default_rng(1).normal(size=(2, 1, 5)).astype(np.float32))
  plain = dict(SOLVER, center_tokens=True)
  _, a = _loss(q_s, q_t, alpha=1.0, beta=0.0, eta=0.0, **plain)
  _, b = _loss(q_s + 3.0 * offset, q_t, alpha=1.0, beta=0.0, eta=0.0, **plain)
  np.testing.assert_allclose(a["ot"], b["ot"], rtol=1e-5)
  np.testing.assert_allclose(a["plan"], b["plan"], rtol=1e-4, atol=1e-7)
  # without centring the offset changes the costs
  _, c = _loss(q_s + 3.0 * offset, q_t, alpha=1.0, beta=0.0, eta=0.0, **RAW)
  assert abs(float(c["ot"]) - float(a["ot"])) > 1e-3


def test_centred_positions_ignore_a_position_code():
  """A code of the position alone (the same at each cell for every image) leaves the OT cost
  unchanged under center_positions; the cost is that of the tokens minus their batch mean."""
  q_s, q_t = _views(n=5, m=5)
  code = jnp.asarray(np.random.default_rng(2).normal(size=(1, 5, 5)).astype(np.float32))
  opts = dict(SOLVER, center_positions=True, alpha=1.0, beta=0.0, eta=0.0)
  _, a = _loss(q_s, q_t, **opts)
  _, b = _loss(q_s + 5.0 * code, q_t + 5.0 * code, **opts)
  np.testing.assert_allclose(a["ot"], b["ot"], rtol=1e-5)
  np.testing.assert_allclose(a["plan"], b["plan"], rtol=1e-4, atol=1e-7)
  by_hand = lambda q: q - jnp.mean(q, axis=0, keepdims=True)
  _, c = _loss(by_hand(q_s), by_hand(q_t), **dict(opts, center_positions=False))
  np.testing.assert_allclose(a["ot"], c["ot"], rtol=1e-5)
  # without it, the shared code dominates the cosine cost and the loss falls
  _, d = _loss(q_s + 5.0 * code, q_t + 5.0 * code, **dict(opts, center_positions=False))
  assert float(d["ot"]) < float(a["ot"]) - 1e-2


def test_location_cost_by_hand():
  pos_s = jnp.asarray([[[0.1, 0.1], [0.1, 0.5]]])
  pos_t = jnp.asarray([[[0.1, 0.1], [0.5, 0.5], [0.3, 0.1]]])
  cost = otcxr.location_cost(pos_s, pos_t, jnp.asarray([0.2]))
  expected = np.array([[[0.0, 0.32, 0.04], [0.16, 0.16, 0.20]]]) / 0.04
  np.testing.assert_allclose(cost, expected, rtol=1e-5)


def test_strong_location_prior_matches_positions():
  """With a dominant location prior the plan follows the known correspondence."""
  q_s, q_t = _views(n=4, m=4)
  grid = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], np.float32)
  perm = np.array([2, 0, 3, 1])
  location = otcxr.location_cost(jnp.asarray(grid[None].repeat(2, 0)),
                                 jnp.asarray(grid[perm][None].repeat(2, 0)), jnp.ones(2))
  _, aux = _loss(q_s, q_t, alpha=1.0, beta=0.0, eta=0.0, location_weight=5.0,
                 location=location, **RAW)
  plan = np.asarray(aux["plan"])
  # cell i of view s sits where cell argsort(perm)[i] of view t sits
  np.testing.assert_array_equal(plan.argmax(axis=2), np.tile(np.argsort(perm), (2, 1)))
  np.testing.assert_allclose(plan.max(axis=2), 0.25, atol=1e-3)
  with pytest.raises(ValueError, match="location_weight > 0 needs"):
    _loss(q_s, q_t, location_weight=1.0, **RAW)


def test_varcov_per_position_matches_numpy():
  q_s, q_t = _views(batch=7, n=3, m=3, d=4)
  _, aux = _loss(q_s, q_t, alpha=0.0, beta=1.0, eta=1.0, varcov_per_position=True, **RAW)
  var = cov = 0.0
  for q in (q_s, q_t):
    terms = [_numpy_vicreg_terms(np.asarray(q)[:, n]) for n in range(q.shape[1])]
    var += np.mean([t[0] for t in terms])
    cov += np.mean([t[1] for t in terms])
  np.testing.assert_allclose(aux["var"], var, rtol=1e-5)
  np.testing.assert_allclose(aux["cov"], cov, rtol=1e-4)


def _numpy_vicreg(a, b, sim=25.0, std=25.0, cov=1.0, eps=1e-4):
  """VICReg (Bardes et al. 2022, Eq. 6) in numpy, unbiased statistics."""
  def var(z):
    return np.mean(np.maximum(0.0, 1.0 - np.sqrt(z.var(0, ddof=1) + eps)))
  def covariance(z):
    c = np.cov(z, rowvar=False)
    return (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / z.shape[1]
  return (sim * np.mean((a - b) ** 2) + std * (var(a) + var(b))
          + cov * (covariance(a) + covariance(b)))


@pytest.mark.parametrize("alignment", ["ot", "location_mse"])
def test_global_term_adds_vicreg_of_mean_tokens(alignment):
  q_s, q_t = _views(seed=3, batch=6, n=4, m=4, d=5)
  positions = (jnp.zeros((6, 4, 2)), jnp.zeros((6, 4, 2)))
  kwargs = dict(alignment=alignment, positions=positions, **RAW)
  base, _ = _loss(q_s, q_t, **kwargs)
  loss, aux = _loss(q_s, q_t, global_weight=0.3, **kwargs)
  expected = _numpy_vicreg(np.asarray(q_s).mean(1), np.asarray(q_t).mean(1))
  assert float(aux["global"]) == pytest.approx(expected, rel=1e-4)
  assert float(loss) == pytest.approx(float(base) + 0.3 * expected, rel=1e-5)
  assert float(aux["loss"]) == pytest.approx(float(loss))
  # The term moves the gradient of the image means (the dense terms alone would not see a
  # per-image offset added to both views' tokens when the tokens are centred).
  grad = jax.grad(lambda q: _loss(q, q_t, global_weight=1.0, **kwargs)[0])(q_s)
  assert np.all(np.isfinite(np.asarray(grad)))



@pytest.mark.parametrize("alignment", ["ot", "location_mse"])
def test_teacher_makes_the_image_level_term_byols(alignment):
  """With a teacher the image-level term is BYOL's loss of the pooled predictions against the
  teacher's projections of the other view, in numpy; the dense terms are unchanged and no
  gradient reaches the teacher."""
  q_s, q_t = _views(seed=4, batch=6, n=4, m=4, d=5)
  rng = np.random.default_rng(8)
  p_s, p_t, z_s, z_t = (jnp.asarray(rng.normal(size=(6, 3)).astype(np.float32)) for _ in range(4))
  positions = (jnp.zeros((6, 4, 2)), jnp.zeros((6, 4, 2)))
  kwargs = dict(alignment=alignment, positions=positions, **RAW)
  base, plain = _loss(q_s, q_t, **kwargs)
  teacher = dict(teacher_tau=0.99, predictions=(p_s, p_t), targets=(z_s, z_t))
  loss, aux = _loss(q_s, q_t, global_weight=0.3, **teacher, **kwargs)
  unit = lambda x: np.asarray(x, np.float64) / np.linalg.norm(np.asarray(x, np.float64), axis=1,
                                                              keepdims=True)
  expected = np.mean(2 - 2 * np.sum(unit(p_s) * unit(z_t), 1)
                     + 2 - 2 * np.sum(unit(p_t) * unit(z_s), 1))
  assert float(aux["global"]) == pytest.approx(expected, rel=1e-5)
  assert float(loss) == pytest.approx(float(base) + 0.3 * expected, rel=1e-5)
  for key in ("var", "cov"):
    np.testing.assert_allclose(aux[key], plain[key], rtol=1e-6)
  grads = jax.grad(lambda p, z: _loss(q_s, q_t, global_weight=0.3, teacher_tau=0.99,
                                      predictions=p, targets=z, **kwargs)[0],
                   argnums=(0, 1))((p_s, p_t), (z_s, z_t))
  assert all(np.abs(np.asarray(g)).max() > 1e-4 for g in grads[0])
  assert all(np.abs(np.asarray(g)).max() == 0.0 for g in grads[1])
  with pytest.raises(ValueError, match="teacher_tau > 0 needs the online `predictions`"):
    _loss(q_s, q_t, global_weight=0.3, teacher_tau=0.99, **kwargs)


def test_teacher_needs_the_image_level_term():
  config = otcxr.OTCXRObjectiveConfig(teacher_tau=0.99)
  with pytest.raises(ValueError, match=r"teacher_tau=0.99 needs global_weight > 0"):
    config.validate()
  assert otcxr.OTCXRObjectiveConfig(teacher_tau=0.99, global_weight=1.0).validate()
