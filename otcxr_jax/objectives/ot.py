r"""Entropic optimal transport between the dense features of two views.

For each item of a batch, with features :math:`x \in \mathbb R^{N\times D}` (source view) and
:math:`y \in \mathbb R^{M\times D}` (target view), a cost :math:`C \in \mathbb R^{N\times M}` and
uniform marginals :math:`a = \mathbf 1_N / N`, :math:`b = \mathbf 1_M / M`, the plan

.. math::

    P^\star = \operatorname*{arg\,min}_{P \ge 0,\; P\mathbf 1 = a,\; P^\top \mathbf 1 = b}
      \langle P, C\rangle - \varepsilon H(P), \qquad H(P) = -\sum_{ij} P_{ij} \log P_{ij},

is computed by a fixed number of Sinkhorn iterations (Cuturi 2013) with ott-jax 0.6.0, and the
alignment loss of OTCXR (Gorade et al., WACV 2025) is :math:`L_{OT} = \langle P^\star, C\rangle`.

Solver facts for ott-jax 0.6.0 (checked on this code base):

* ``epsilon`` is absolute here. ``ott.geometry.Geometry`` reads ``epsilon`` as the absolute
  regularisation only when it is a number and ``relative_epsilon`` is ``None`` (the default);
  ``epsilon=None`` means :math:`0.05\cdot\operatorname{std}(C)`, and ``relative_epsilon='mean'``
  or ``'std'`` multiplies ``epsilon`` by that statistic of the cost. ``scale_cost`` (default 1.0)
  divides the cost before use. We pass a number, no ``relative_epsilon`` and no cost scaling.
* ``min_iterations == max_iterations == inner_iterations == num_iters`` makes each solve one
  fixed-length ``lax.scan`` (vmappable, no data-dependent loop). ``inner_iterations`` must equal
  ``num_iters``: with a fixed-length scan of several outer steps, ott's backprop-through-
  iterations (``fixpoint_iter_backprop``) replays its checkpoints in the wrong order and returns
  wrong gradients for ``grad_mode='unrolled'``.
* ``costs.Cosine`` has NaN gradients at zero vectors, so :func:`cost_matrix` builds the cost.
* ott's implicit differentiation cannot take a custom linear solver (``UnboundLocalError``) and
  its lineax solve raises on near-permutation plans such as identical views; ``'implicit'`` uses
  :mod:`otcxr_jax.objectives.implicit_diff` instead.

Log-domain versus kernel (``lse_mode``) iterations: on a shared 2-core CPU, 64 problems of
196x196 with 50 iterations took 70-180 ms in kernel mode and 150-330 ms in log mode (1.5-3x
slower; 49x49: 10 ms against 11-21 ms). Kernel mode multiplies
by :math:`K = e^{-C/\varepsilon}` and needs :math:`e^{\pm C_{\max}/\varepsilon}` to stay inside
float32 range: adversarial cosine costs (opposite vectors, zero vectors, identical or collapsed
views) gave finite, converged plans up to :math:`C_{\max}/\varepsilon = 50` and wrong plans at
100, and unbounded squared-Euclidean costs overflow it. Differentiating *through* kernel
iterations gave NaN on such inputs even at :math:`C_{\max}/\varepsilon = 40`. Hence
:func:`default_lse_mode`: kernel mode only for the cosine cost (bounded by 2), with
:math:`2/\varepsilon \le 50` and a gradient mode that does not differentiate the iterations.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

from otcxr_jax.objectives import implicit_diff

CostKind = Literal["cosine", "sqeuclidean"]
GradMode = Literal["fixed", "unrolled", "implicit"]
COST_KINDS: tuple[str, ...] = ("cosine", "sqeuclidean")
GRAD_MODES: tuple[str, ...] = ("fixed", "unrolled", "implicit")

#: Largest ``max_cost / epsilon`` for which :func:`default_lse_mode` picks kernel iterations.
KERNEL_MODE_MAX_COST_RATIO = 50.0
#: Upper bound of the cosine cost ``1 - cos``.
COSINE_COST_MAX = 2.0


@struct.dataclass
class OTResult:
  """Batched entropic OT solution; every field is float32.

  Attributes:
    plan: (B, N, M) transport plans; each sums to 1.
    cost: (B, N, M) cost matrices.
    loss: (B,) transport cost :math:`\\langle P^\\star, C\\rangle`.
    marginal_error: (B,) :math:`\\|P\\mathbf 1 - a\\|_1 + \\|P^\\top\\mathbf 1 - b\\|_1`.
    entropy: (B,) :math:`H(P) = -\\sum_{ij} P_{ij}\\log P_{ij}` (0 log 0 = 0).
  """

  plan: jax.Array
  cost: jax.Array
  loss: jax.Array
  marginal_error: jax.Array
  entropy: jax.Array


def _l2_normalize(x: jax.Array, eps: float) -> jax.Array:
  """``x / max(|x|, eps)`` along the last axis, with finite gradients at ``x = 0``."""
  sq_norm = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq_norm, eps * eps))


def _pairwise_dot(x: jax.Array, y: jax.Array) -> jax.Array:
  """(..., N, D), (..., M, D) -> (..., N, M) inner products at full float32 precision.

  Costs are divided by epsilon (0.05) inside exponentials, so the bfloat16 passes of a TPU's
  default matmul precision (relative error ~4e-3) would perturb the plan by several percent.
  """
  return jnp.einsum("...nd,...md->...nm", x, y, precision=jax.lax.Precision.HIGHEST)


def cost_matrix(
    x: jax.Array, y: jax.Array, kind: CostKind = "cosine", eps: float = 1e-6
) -> jax.Array:
  """Pairwise cost between the rows of ``x`` and ``y``.

  Args:
    x: (..., N, D) features.
    y: (..., M, D) features with the same leading dimensions.
    kind: ``'cosine'``: :math:`1 - \\langle x_i/\\max(|x_i|,\\epsilon),
      y_j/\\max(|y_j|,\\epsilon)\\rangle \\in [0, 2]` (a zero vector has cost 1 to everything,
      and finite gradients); ``'sqeuclidean'``: :math:`|x_i - y_j|^2` on the raw features.
    eps: norm floor of the cosine normalisation.

  Returns:
    (..., N, M) cost matrix.
  """
  if kind not in COST_KINDS:
    raise ValueError(f"kind must be one of {COST_KINDS}, got {kind!r}")
  if kind == "cosine":
    sim = _pairwise_dot(_l2_normalize(x, eps), _l2_normalize(y, eps))
    return 1.0 - sim
  cross = _pairwise_dot(x, y)
  sq_x = jnp.sum(x * x, axis=-1)[..., :, None]
  sq_y = jnp.sum(y * y, axis=-1)[..., None, :]
  return jnp.maximum(sq_x + sq_y - 2.0 * cross, 0.0)


def default_lse_mode(cost: CostKind, epsilon: float, grad_mode: GradMode) -> bool:
  """Log-domain iterations unless kernel iterations were verified safe (module docstring).

  Returns ``False`` (kernel mode, faster) only for ``cost='cosine'`` with
  ``2 / epsilon <= KERNEL_MODE_MAX_COST_RATIO`` and ``grad_mode`` other than ``'unrolled'``.
  """
  return not (
      cost == "cosine"
      and COSINE_COST_MAX / epsilon <= KERNEL_MODE_MAX_COST_RATIO
      and grad_mode != "unrolled"
  )


def _check_solver_args(epsilon: float, num_iters: int, grad_mode: str) -> None:
  if (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))
      or not 0 < epsilon < math.inf):
    raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
  if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
    raise ValueError(f"num_iters must be an integer >= 1, got {num_iters!r}")
  if grad_mode not in GRAD_MODES:
    raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")


def transport_from_cost(
    cost: jax.Array,
    *,
    epsilon: float = 0.05,
    num_iters: int = 50,
    lse_mode: bool = True,
    grad_mode: GradMode = "fixed",
) -> OTResult:
  """Entropic OT with uniform marginals for a batch of cost matrices.

  Args:
    cost: (B, N, M) cost matrices; computed on in float32 whatever their dtype.
    epsilon: absolute entropic regularisation (static Python number).
    num_iters: number of Sinkhorn iterations, run as one fixed-length scan (static).
    lse_mode: log-domain iterations if True, kernel (scaling) iterations if False.
    grad_mode: how gradients reach the cost:
      ``'fixed'``: the plan is computed from ``stop_gradient(cost)``, so the gradient of
      ``loss`` is :math:`P^\\star` (exact for the entropic OT value at the optimum, by the
      envelope theorem); ``'unrolled'``: backpropagation through the iterations;
      ``'implicit'``: implicit function theorem at the fixed point
      (:mod:`otcxr_jax.objectives.implicit_diff`).

  Returns:
    An :class:`OTResult` of batch size B.
  """
  _check_solver_args(epsilon, num_iters, grad_mode)
  if cost.ndim != 3:
    raise ValueError(f"cost must have shape (B, N, M), got shape {cost.shape}")
  # ott (with jaxopt, lineax and equinox) takes about 2 s to import: imported where a plan is
  # solved, so the commands that never solve one (config errors, builds, evaluations) start
  # without it.
  from ott.geometry import geometry
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn

  cost = cost.astype(jnp.float32)
  epsilon = float(epsilon)
  solver = sinkhorn.Sinkhorn(
      lse_mode=bool(lse_mode),
      min_iterations=num_iters,
      max_iterations=num_iters,
      inner_iterations=num_iters,
      implicit_diff=None,
  )

  def solve(c: jax.Array) -> jax.Array:
    geom = geometry.Geometry(cost_matrix=c, epsilon=epsilon)
    return solver(linear_problem.LinearProblem(geom)).matrix

  # Kernel-vector products at full float32 precision (not TPU bfloat16 or GPU TF32 passes).
  with jax.default_matmul_precision("highest"):
    if grad_mode == "fixed":
      plan = jax.vmap(solve)(jax.lax.stop_gradient(cost))
    elif grad_mode == "unrolled":
      plan = jax.vmap(solve)(cost)
    else:
      plan = jax.vmap(lambda c: implicit_diff.implicit_plan(solve, c, epsilon))(cost)

  _, n, m = cost.shape
  marginal_error = jnp.sum(jnp.abs(plan.sum(axis=2) - 1.0 / n), axis=1) + jnp.sum(
      jnp.abs(plan.sum(axis=1) - 1.0 / m), axis=1
  )
  positive = plan > 0
  plan_log_plan = jnp.where(positive, plan * jnp.log(jnp.where(positive, plan, 1.0)), 0.0)
  return OTResult(
      plan=plan,
      cost=cost,
      loss=jnp.sum(plan * cost, axis=(1, 2)),
      marginal_error=marginal_error,
      entropy=-jnp.sum(plan_log_plan, axis=(1, 2)),
  )


def batched_transport(
    x: jax.Array,
    y: jax.Array,
    *,
    epsilon: float = 0.05,
    num_iters: int = 50,
    cost: CostKind = "cosine",
    lse_mode: bool | None = None,
    grad_mode: GradMode = "fixed",
    cost_offset: jax.Array | None = None,
) -> OTResult:
  """Entropic OT between two views' dense features, batched with ``jax.vmap``; jit-able.

  Args:
    x: (B, N, D) source-view features (any float dtype; computed on in float32).
    y: (B, M, D) target-view features.
    epsilon: absolute entropic regularisation (static Python number).
    num_iters: number of Sinkhorn iterations (static).
    cost: ``'cosine'`` or ``'sqeuclidean'`` (see :func:`cost_matrix`).
    lse_mode: log-domain (True) or kernel (False) iterations; ``None`` picks
      :func:`default_lse_mode`.
    grad_mode: ``'fixed'``, ``'unrolled'`` or ``'implicit'`` (see :func:`transport_from_cost`).
    cost_offset: optional (B, N, M) constant added to the feature cost (e.g. a location prior);
      no gradient flows into it. With it, ``lse_mode=None`` means log-domain iterations, since
      the kernel-mode safety bound is known only for the bare cosine cost.

  Returns:
    An :class:`OTResult` of batch size B.
  """
  if x.ndim != 3 or y.ndim != 3:
    raise ValueError(
        f"x and y must have shape (B, N, D) and (B, M, D), got {x.shape} and {y.shape}"
    )
  if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
    raise ValueError(
        f"x and y must share batch size and feature dimension, got {x.shape} and {y.shape}"
    )
  if cost not in COST_KINDS:
    raise ValueError(f"cost must be one of {COST_KINDS}, got {cost!r}")
  _check_solver_args(epsilon, num_iters, grad_mode)
  if lse_mode is None:
    lse_mode = cost_offset is not None or default_lse_mode(cost, epsilon, grad_mode)
  c = cost_matrix(x.astype(jnp.float32), y.astype(jnp.float32), kind=cost)
  if cost_offset is not None:
    if cost_offset.shape != c.shape:
      raise ValueError(f"cost_offset must have shape {c.shape}, got {cost_offset.shape}")
    c = c + jax.lax.stop_gradient(cost_offset.astype(jnp.float32))
  return transport_from_cost(
      c, epsilon=epsilon, num_iters=num_iters, lse_mode=lse_mode, grad_mode=grad_mode
  )
