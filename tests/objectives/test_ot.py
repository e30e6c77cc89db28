"""Entropic OT of otcxr_jax.objectives.ot against POT, closed forms and plain numpy."""

import functools
import os

for _backend in ("PYTORCH", "TENSORFLOW", "JAX", "CUPY"):
  os.environ.setdefault(f"POT_BACKEND_DISABLE_{_backend}", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import ot as pot  # noqa: E402
import pytest  # noqa: E402

from otcxr_jax.objectives import ot  # noqa: E402

EPS = 0.1


def _random_costs(seed, batch=3, n=5, m=7, scale=3.0):
  """Costs in [0, scale): not normalised, so a relative epsilon would change the plan."""
  return np.random.default_rng(seed).uniform(0.0, scale, size=(batch, n, m)).astype(np.float32)


def _pot_plan(cost, epsilon, num_iters):
  n, m = cost.shape
  return pot.sinkhorn(
      np.full(n, 1.0 / n),
      np.full(m, 1.0 / m),
      cost.astype(np.float64),
      reg=epsilon,
      numItermax=num_iters,
      stopThr=0.0,
      warn=False,
  )


@pytest.mark.parametrize("lse_mode", [True, False])
@pytest.mark.parametrize("num_iters", [7, 200])
def test_plan_matches_pot_iterate_by_iterate(lse_mode, num_iters):
  # POT's Sinkhorn-Knopp and ott's Sinkhorn both update the column scaling, then the row
  # scaling, from a constant start: after the same number of iterations the plans coincide.
  costs = _random_costs(0)
  result = jax.jit(
      lambda c: ot.transport_from_cost(c, epsilon=EPS, num_iters=num_iters, lse_mode=lse_mode)
  )(costs)
  for item in range(costs.shape[0]):
    np.testing.assert_allclose(
        result.plan[item], _pot_plan(costs[item], EPS, num_iters), rtol=2e-4, atol=1e-7
    )


def test_two_point_plan_matches_closed_form():
  # With uniform 2x2 marginals the plan is [[p, 1/2 - p], [1/2 - p, p]] and
  # P11 P22 / (P12 P21) = exp(-(C11 + C22 - C12 - C21) / eps), so p / (1/2 - p) = sqrt(kappa).
  cost = np.array([[[0.3, 1.7], [0.9, 0.2]]], np.float32)
  epsilon = 0.5
  sqrt_kappa = np.exp(-(0.3 + 0.2 - 1.7 - 0.9) / (2 * epsilon))
  p = sqrt_kappa / (2 * (1 + sqrt_kappa))
  expected = np.array([[p, 0.5 - p], [0.5 - p, p]])
  result = jax.jit(lambda c: ot.transport_from_cost(c, epsilon=epsilon, num_iters=100))(cost)
  np.testing.assert_allclose(result.plan[0], expected, rtol=1e-5)


def test_marginals_loss_and_entropy_match_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 6, 4)).astype(np.float32)
  y = rng.normal(size=(3, 9, 4)).astype(np.float32)
  result = jax.jit(lambda x, y: ot.batched_transport(x, y, epsilon=0.05, num_iters=300))(x, y)
  plan, cost = np.asarray(result.plan, np.float64), np.asarray(result.cost, np.float64)

  np.testing.assert_allclose(plan.sum(axis=(1, 2)), 1.0, rtol=1e-5)
  error = np.abs(plan.sum(2) - 1 / 6).sum(1) + np.abs(plan.sum(1) - 1 / 9).sum(1)
  np.testing.assert_allclose(result.marginal_error, error, atol=1e-6)
  assert np.all(error < 1e-4)
  np.testing.assert_allclose(result.loss, (plan * cost).sum(axis=(1, 2)), rtol=1e-5)
  entropy = -np.sum(np.where(plan > 0, plan * np.log(np.where(plan > 0, plan, 1.0)), 0.0), (1, 2))
  np.testing.assert_allclose(result.entropy, entropy, rtol=1e-5)


def test_few_iterations_leave_marginal_error():
  x = np.random.default_rng(2).normal(size=(2, 8, 4)).astype(np.float32)
  y = np.random.default_rng(3).normal(size=(2, 8, 4)).astype(np.float32)
  one, many = (
      jax.jit(lambda x, y, n=n: ot.batched_transport(x, y, epsilon=0.05, num_iters=n))(x, y)
      for n in (1, 300)
  )
  assert np.all(np.asarray(one.marginal_error) > 100 * np.asarray(many.marginal_error))


@pytest.mark.parametrize("kind,metric", [("cosine", "cosine"), ("sqeuclidean", "sqeuclidean")])
def test_cost_matrix_matches_pot_dist(kind, metric):
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
  cost = ot.cost_matrix(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), kind=kind)
  np.testing.assert_allclose(cost, pot.dist(x, y, metric=metric), rtol=1e-5, atol=1e-5)


def test_cosine_cost_of_zero_vector_is_one_with_finite_gradient():
  x = jnp.zeros((2, 3)).at[1].set(jnp.array([1.0, 2.0, 2.0]))
  y = jnp.array([[1.0, 0.0, 0.0], [-3.0, 4.0, 0.0]])
  cost = ot.cost_matrix(x, y)
  np.testing.assert_allclose(cost[0], [1.0, 1.0])
  np.testing.assert_allclose(cost[1], [1.0 - 1.0 / 3.0, 1.0 - 5.0 / 15.0], rtol=1e-6)
  grad = jax.grad(lambda x: ot.cost_matrix(x, y).sum())(x)
  assert np.all(np.isfinite(grad))


def test_default_lse_mode_uses_kernel_only_where_safe():
  assert ot.default_lse_mode("cosine", 0.05, "fixed") is False
  assert ot.default_lse_mode("cosine", 0.05, "implicit") is False
  assert ot.default_lse_mode("cosine", 0.05, "unrolled") is True
  assert ot.default_lse_mode("cosine", 0.02, "fixed") is True
  assert ot.default_lse_mode("sqeuclidean", 0.05, "fixed") is True


def test_kernel_mode_converges_on_extreme_cosine_costs():
  # Opposite vectors (cost 2), zero vectors (cost 1) and collapsed views, at the largest
  # cost / epsilon ratio for which kernel mode is chosen.
  n = 16
  e1 = jnp.zeros((n, 4)).at[:, 0].set(1.0)
  x = jnp.stack([e1.at[: n // 2].multiply(-1.0), e1.at[:3].set(0.0), jnp.ones((n, 4))])
  y = jnp.stack([e1, (-e1).at[0].set(e1[0]), jnp.ones((n, 4))])
  epsilon = ot.COSINE_COST_MAX / ot.KERNEL_MODE_MAX_COST_RATIO
  kernel, log = (
      jax.jit(
          lambda x, y, lse=lse: ot.batched_transport(
              x, y, epsilon=epsilon, num_iters=100, lse_mode=lse
          )
      )(x, y)
      for lse in (False, True)
  )
  assert np.all(np.isfinite(kernel.plan))
  assert np.all(np.asarray(kernel.marginal_error) < 1e-4)
  np.testing.assert_allclose(kernel.plan, log.plan, atol=1e-6)


def _degenerate_views():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 6, 8)).astype(np.float32)
  zeros = x.copy()
  zeros[:, :2] = 0.0
  return {
      "zero_vectors": (zeros, rng.normal(size=(2, 6, 8)).astype(np.float32)),
      "identical_views": (x, x.copy()),
  }


@functools.partial(jax.jit, static_argnames="grad_mode")
def _feature_grads(x, y, grad_mode):
  loss = lambda x, y: ot.batched_transport(x, y, grad_mode=grad_mode).loss.sum()
  return jax.grad(loss, argnums=(0, 1))(x, y)


@pytest.mark.parametrize("grad_mode", ot.GRAD_MODES)
def test_gradients_are_finite_on_degenerate_views(grad_mode):
  for case, (x, y) in _degenerate_views().items():
    grads = _feature_grads(x, y, grad_mode)
    for g in grads:
      assert np.all(np.isfinite(g)), case
    assert np.any(np.asarray(grads[0]) != 0), case


@functools.partial(jax.jit, static_argnames=("grad_mode", "lse_mode"))
def _cost_grads(costs, weights, grad_mode, lse_mode=True):
  """Gradients of <W, P>, <P, C> and <P, C> - eps H(P) with respect to the costs."""

  def objectives(c):
    result = ot.transport_from_cost(
        c, epsilon=EPS, num_iters=300, lse_mode=lse_mode, grad_mode=grad_mode
    )
    return {
        "linear": jnp.sum(result.plan * weights),
        "transport": jnp.sum(result.loss),
        "entropic": jnp.sum(result.loss - EPS * result.entropy),
    }

  return jax.jacrev(objectives)(costs), jax.lax.stop_gradient(
      ot.transport_from_cost(costs, epsilon=EPS, num_iters=300, lse_mode=lse_mode).plan
  )


def test_gradient_modes_envelope_theorem_and_agreement():
  costs = jnp.asarray(_random_costs(6, batch=2, n=4, m=7, scale=1.0))
  weights = jnp.asarray(np.random.default_rng(8).normal(size=costs.shape), jnp.float32)
  grads = {mode: _cost_grads(costs, weights, mode)[0] for mode in ot.GRAD_MODES}
  plan = _cost_grads(costs, weights, "fixed")[1]
  tol = 1e-4 * float(plan.max())

  # Envelope theorem: d/dC of the entropic OT value <P*, C> - eps H(P*) is P*. 'fixed' gets it
  # by holding the plan; 'unrolled' and 'implicit' by differentiating the plan.
  np.testing.assert_allclose(grads["fixed"]["transport"], plan, atol=1e-7)
  for mode in ("unrolled", "implicit"):
    np.testing.assert_allclose(grads[mode]["entropic"], plan, atol=tol)
    # <P*, C> itself also depends on C through the plan.
    assert np.abs(grads[mode]["transport"] - plan).max() > 100 * tol

  # Converged: backpropagation through the iterations and the implicit function theorem give
  # the same derivative of a random linear function of the plan. Checked in kernel mode too, on
  # the transposed problem (N > M: the Schur complement is taken on the other side).
  unrolled = grads["unrolled"]["linear"]
  transposed = lambda a: jnp.swapaxes(a, 1, 2)
  implicit_kernel_t = _cost_grads(
      transposed(costs), transposed(weights), "implicit", lse_mode=False)[0]["linear"]
  scale = float(jnp.abs(unrolled).max())
  assert scale > 0.1
  for implicit in (grads["implicit"]["linear"], transposed(implicit_kernel_t)):
    np.testing.assert_allclose(implicit, unrolled, atol=1e-4 * scale)


def test_low_precision_input_is_solved_in_float32():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(2, 5, 8)).astype(np.float32)
  y = rng.normal(size=(2, 5, 8)).astype(np.float32)
  transport = jax.jit(ot.batched_transport)
  low = transport(jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16))
  ref = transport(
      np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32),
      np.asarray(jnp.asarray(y, jnp.bfloat16), np.float32),
  )
  for field in ("plan", "cost", "loss", "marginal_error", "entropy"):
    assert getattr(low, field).dtype == jnp.float32
    np.testing.assert_allclose(getattr(low, field), getattr(ref, field), rtol=1e-6)


@pytest.mark.parametrize(
    "x_shape,y_shape,kwargs,match",
    [
        ((5, 4), (5, 4), {}, "x and y must have shape"),
        ((2, 5, 4), (3, 5, 4), {}, "batch size and feature dimension"),
        ((2, 5, 4), (2, 5, 3), {}, "batch size and feature dimension"),
        ((2, 5, 4), (2, 5, 4), {"epsilon": 0.0}, "epsilon"),
        ((2, 5, 4), (2, 5, 4), {"num_iters": 0}, "num_iters"),
        ((2, 5, 4), (2, 5, 4), {"num_iters": 10.0}, "num_iters"),
        ((2, 5, 4), (2, 5, 4), {"cost": "l1"}, "cost"),
        ((2, 5, 4), (2, 5, 4), {"grad_mode": "danskin"}, "grad_mode"),
    ],
)
def test_invalid_arguments_raise(x_shape, y_shape, kwargs, match):
  with pytest.raises(ValueError, match=match):
    ot.batched_transport(jnp.ones(x_shape), jnp.ones(y_shape), **kwargs)


def test_invalid_cost_arguments_raise():
  with pytest.raises(ValueError, match="cost must have shape"):
    ot.transport_from_cost(jnp.ones((4, 4)))
  with pytest.raises(ValueError, match="kind"):
    ot.cost_matrix(jnp.ones((4, 2)), jnp.ones((4, 2)), kind="cos")
