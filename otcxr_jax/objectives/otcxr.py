r"""The OTCXR objective (Gorade, Singh, Mishra, WACV 2025, arXiv 2404.11868).

For projected dense features :math:`q_s, q_t` of the two views (shape (B, N, D) and (B, M, D)),

.. math::

    L = \alpha \cdot \frac1B\sum_b L_{OT}(q_s^b, q_t^b)
      + \beta \cdot [v(q_s) + v(q_t)] + \eta \cdot [c(q_s) + c(q_t)],

with :math:`L_{OT} = \langle P^\star, C\rangle` from :mod:`otcxr_jax.objectives.ot` and the VICReg
variance :math:`v` and covariance :math:`c` of :mod:`otcxr_jax.objectives.regularizers` taken
over all batch items and positions.

Default weights. VICReg (Bardes et al. 2022; also MLVICX, the authors' predecessor) minimises
:math:`25\,\mathrm{MSE}(z_s, z_t) + 25\,[v(z_s) + v(z_t)]/2 + 1\,[c(z_s) + c(z_t)]`. When every
dimension has unit second moment, which the variance hinge enforces, :math:`|z|^2 \approx D` and
:math:`\mathrm{MSE} = |z_s - z_t|^2 / D \approx 2\,(1 - \cos)`, twice the cosine cost. Written in
this objective's form VICReg's weights are therefore :math:`\alpha = 50`, :math:`\beta = 12.5`,
:math:`\eta = 1`; they are the defaults, so VICReg's overall loss scale (and the learning rates
tuned for it) carry over. They are starting points to be tuned on the synthetic benchmark.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from otcxr_jax.objectives import byol, location_match, ot, regularizers, vicreg

#: Keys of the scalar metrics in the ``aux`` dict returned by :func:`otcxr_loss`.
METRIC_KEYS: tuple[str, ...] = ("loss", "ot", "var", "cov", "marginal_error", "plan_entropy")
#: The same with ``alignment='location_mse'`` (no transport problem is solved).
LOCATION_MSE_METRIC_KEYS: tuple[str, ...] = ("loss", "location_mse", "var", "cov")
#: Values of ``alignment``: the paper's OT, or the location-matched MSE ablation.
ALIGNMENTS: tuple[str, ...] = ("ot", "location_mse")
#: Key of the (B, N, M) transport plans in ``aux``; drop it before logging scalars.
PLAN_KEY = "plan"


@dataclasses.dataclass(frozen=True)
class OTCXRObjectiveConfig:
  """Hyper-parameters of :func:`otcxr_loss` (default weights: see the module docstring).

  Attributes:
    alpha: weight of the OT alignment loss.
    beta: weight of the variance hinge, applied to each view.
    eta: weight of the covariance penalty, applied to each view.
    epsilon: absolute entropic regularisation of the OT problem.
    num_iters: Sinkhorn iterations (a fixed-length scan).
    cost: ``'cosine'`` or ``'sqeuclidean'``.
    lse_mode: log-domain (True) or kernel (False) Sinkhorn; None picks
      :func:`otcxr_jax.objectives.ot.default_lse_mode`.
    grad_mode: ``'fixed'``, ``'unrolled'`` or ``'implicit'``
      (see :func:`otcxr_jax.objectives.ot.transport_from_cost`).
    center_tokens: subtract each image's mean token before the OT cost. Without it, features
      that are the same at every position (spatial collapse) make every cost equal, the plan
      uniform and ``L_OT`` small, so the fixed-plan gradient pulls all positions of one view
      towards all positions of the other and collapses them further. Centred, a spatially
      constant map becomes the zero vector at every position (cosine cost 1, the maximum), and
      making a matched pair more similar makes the image's other tokens less similar to it.
      The variance/covariance terms always see the uncentred ``q``.
    center_positions: subtract, at each token position, the mean token of the batch (per view)
      before the OT cost. A code of the position alone (the same at one grid cell for every
      image, which zero padding makes easy to compute) then vanishes from the cost, so matching
      the same cell of both views stops being free. Without it, on the synthetic data the dense
      features become such a code: the projected tokens of a 4x4 map span a 15-dimensional
      simplex of the 16 cells with no image content, and the variance/covariance terms stay fixed
      from the first hundred steps (docs/results.md). The variance/covariance terms always see
      the uncentred ``q``.
    location_weight: weight λ of a location prior added to the transport cost,
      ``λ·|p_i - p_j|² / h²`` for cells at source-image positions ``p`` (from the crop
      geometry) and mean cell size ``h`` (:func:`location_cost`). 0 gives the paper's pure
      feature cost. With λ > 0 the plan prefers cells that see the same anatomy, so a feature
      that only encodes a cell's position in its view (zero padding makes convolutional
      features position-aware) no longer lowers the loss; without it, on the synthetic data the
      plan locks onto "same grid cell" matches whatever the crops are.
    varcov_per_position: take the variance/covariance terms over the batch separately at each
      token position and average them (as VICRegL does for local features), instead of over
      batch x positions pooled together. Pooled, the variation between positions of one image
      (top vs bottom of the chest) counts as feature variance and correlates every dimension.
    alignment: ``'ot'`` (the paper: ``L_OT``) or ``'location_mse'`` (ablation: ``L_OT``
      replaced by the MSE between tokens matched by their source-image positions,
      :mod:`otcxr_jax.objectives.location_match`; ``epsilon``, ``num_iters``, ``cost``,
      ``lse_mode``, ``grad_mode``, ``center_tokens`` and ``location_weight`` then do nothing).
    global_weight: weight γ of an image-level term, γ·VICReg(m_s, m_t) on each view's mean
      token m = mean over positions of q (:func:`global_term`). 0 (default) is the paper's
      objective. Centred tokens leave the image-level content of the features unconstrained
      (the OT cost sees positions relative to the image mean; variance over batch x positions is
      met by the variation between positions), so pooled features can stay the same for every
      image; this term asks the image mean to agree between views and vary between images.
    teacher_tau: 0 (default): no teacher, and the image-level term (``global_weight``) is
      VICReg's on the mean tokens. A value in (0, 1) makes the image-level term BYOL's (Grill et
      al. 2020): the network holds a projector and a predictor of the encoder's pooled features
      and an exponential moving average of the encoder and that projector (``models/target.py``),
      whose decay starts at ``teacher_tau`` and rises to 1 over the run (BYOL's cosine schedule);
      each view's prediction regresses the teacher's projection of the other view. The dense
      terms stay the paper's. Needs ``global_weight > 0``.
  """

  alpha: float = 50.0
  beta: float = 12.5
  eta: float = 1.0
  epsilon: float = 0.05
  num_iters: int = 50
  cost: str = "cosine"
  lse_mode: bool | None = None
  grad_mode: str = "fixed"
  center_tokens: bool = True
  center_positions: bool = False
  location_weight: float = 0.0
  varcov_per_position: bool = False
  alignment: str = "ot"
  global_weight: float = 0.0
  teacher_tau: float = 0.0

  def validate(self) -> OTCXRObjectiveConfig:
    """Returns self, or raises ValueError naming the first invalid field."""
    for name in ("alpha", "beta", "eta", "location_weight", "global_weight"):
      value = getattr(self, name)
      if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"OTCXRObjectiveConfig.{name} must be a finite number >= 0, got {value!r}"
        )
    if not _is_real(self.epsilon) or not math.isfinite(self.epsilon) or self.epsilon <= 0:
      raise ValueError(
          f"OTCXRObjectiveConfig.epsilon must be a finite number > 0, got {self.epsilon!r}"
      )
    if (
        isinstance(self.num_iters, bool)
        or not isinstance(self.num_iters, int)
        or self.num_iters < 1
    ):
      raise ValueError(
          f"OTCXRObjectiveConfig.num_iters must be an integer >= 1, got {self.num_iters!r}"
      )
    if self.cost not in ot.COST_KINDS:
      raise ValueError(
          f"OTCXRObjectiveConfig.cost must be one of {ot.COST_KINDS}, got {self.cost!r}"
      )
    if self.lse_mode is not None and not isinstance(self.lse_mode, bool):
      raise ValueError(
          f"OTCXRObjectiveConfig.lse_mode must be None, True or False, got {self.lse_mode!r}"
      )
    if self.grad_mode not in ot.GRAD_MODES:
      raise ValueError(
          f"OTCXRObjectiveConfig.grad_mode must be one of {ot.GRAD_MODES}, "
          f"got {self.grad_mode!r}"
      )
    if self.alignment not in ALIGNMENTS:
      raise ValueError(
          f"OTCXRObjectiveConfig.alignment must be one of {ALIGNMENTS}, got {self.alignment!r}"
      )
    tau = self.teacher_tau
    if not _is_real(tau) or not 0.0 <= tau < 1.0:
      raise ValueError(
          f"OTCXRObjectiveConfig.teacher_tau must be a number in [0, 1) (0: no teacher), "
          f"got {tau!r}"
      )
    if tau and not self.global_weight:
      raise ValueError(
          f"OTCXRObjectiveConfig.teacher_tau={tau!r} needs global_weight > 0 (the teacher enters "
          f"the loss through the image-level term), got global_weight={self.global_weight!r}"
      )
    return self


def _is_real(value: object) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _center(q: jax.Array) -> jax.Array:
  """Subtracts each image's mean token: the OT cost then sees only spatial structure."""
  return q - jnp.mean(q, axis=-2, keepdims=True)


def _center_positions(q: jax.Array) -> jax.Array:
  """Subtracts the batch's mean token at each position: the cost then sees no pure position code."""
  return q - jnp.mean(q, axis=0, keepdims=True)


def location_cost(pos_s: jax.Array, pos_t: jax.Array, cell_size: jax.Array) -> jax.Array:
  """Squared distance between cell positions in units of the cell size, ``(B, N, M)``.

  Args:
    pos_s: (B, N, 2) source-image positions of view s's cells.
    pos_t: (B, M, 2) source-image positions of view t's cells.
    cell_size: (B,) typical cell side in the same units (e.g. the mean of both views').
  """
  d2 = jnp.sum(jnp.square(pos_s[:, :, None, :] - pos_t[:, None, :, :]), axis=-1)
  return jax.lax.stop_gradient(d2 / jnp.square(cell_size)[:, None, None])


def _variance_covariance(q_s: jax.Array, q_t: jax.Array,
                         per_position: bool) -> tuple[jax.Array, jax.Array]:
  """Sums over both views of the variance and covariance terms (see ``varcov_per_position``)."""
  if per_position:
    mean_over_positions = lambda f, q: jnp.mean(jax.vmap(f, in_axes=1)(q))
    var = (mean_over_positions(regularizers.variance_loss, q_s)
           + mean_over_positions(regularizers.variance_loss, q_t))
    cov = (mean_over_positions(regularizers.covariance_loss, q_s)
           + mean_over_positions(regularizers.covariance_loss, q_t))
  else:
    var = regularizers.variance_loss(q_s) + regularizers.variance_loss(q_t)
    cov = regularizers.covariance_loss(q_s) + regularizers.covariance_loss(q_t)
  return var, cov


def otcxr_loss(
    q_s: jax.Array,
    q_t: jax.Array,
    *,
    alpha: float = OTCXRObjectiveConfig.alpha,
    beta: float = OTCXRObjectiveConfig.beta,
    eta: float = OTCXRObjectiveConfig.eta,
    epsilon: float = OTCXRObjectiveConfig.epsilon,
    num_iters: int = OTCXRObjectiveConfig.num_iters,
    cost: ot.CostKind = OTCXRObjectiveConfig.cost,
    lse_mode: bool | None = OTCXRObjectiveConfig.lse_mode,
    grad_mode: ot.GradMode = OTCXRObjectiveConfig.grad_mode,
    center_tokens: bool = OTCXRObjectiveConfig.center_tokens,
    center_positions: bool = OTCXRObjectiveConfig.center_positions,
    location_weight: float = OTCXRObjectiveConfig.location_weight,
    varcov_per_position: bool = OTCXRObjectiveConfig.varcov_per_position,
    alignment: str = OTCXRObjectiveConfig.alignment,
    global_weight: float = OTCXRObjectiveConfig.global_weight,
    teacher_tau: float = OTCXRObjectiveConfig.teacher_tau,
    location: jax.Array | None = None,
    positions: tuple[jax.Array, jax.Array] | None = None,
    predictions: tuple[jax.Array, jax.Array] | None = None,
    targets: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """OTCXR loss of two views' projected dense features; jit-able and differentiable.

  ``otcxr_loss(q_s, q_t, **dataclasses.asdict(config))`` applies an
  :class:`OTCXRObjectiveConfig`. The weights may be traced values (e.g. schedules); the solver
  arguments must be static Python values.

  Args:
    q_s: (B, N, D) source-view features.
    q_t: (B, M, D) target-view features.
    alpha, beta, eta: weights of the OT, variance and covariance terms.
    epsilon, num_iters, cost, lse_mode, grad_mode: OT solver settings, see
      :func:`otcxr_jax.objectives.ot.batched_transport`.
    alignment: ``'ot'``, or ``'location_mse'`` for the ablation that replaces ``L_OT`` with
      :func:`otcxr_jax.objectives.location_match.location_matched_mse` (weight ``alpha``).
    location: (B, N, M) location cost (:func:`location_cost`), needed when
      ``location_weight > 0`` with ``alignment='ot'``.
    positions: ``(pos_s, pos_t)``, the (B, N, 2) and (B, M, 2) source-image positions of the
      tokens, needed with ``alignment='location_mse'``.
    teacher_tau: > 0 (a teacher, see :class:`OTCXRObjectiveConfig`) makes the image-level term
      BYOL's on ``predictions`` and ``targets``; its value is the teacher's schedule, not the
      loss's.
    predictions: ``(p_s, p_t)``, the online predictions (B, D') of the two views' pooled
      features.
    targets: ``(z_s, z_t)``, the teacher's projections (B, D') of the two views (no gradient
      flows into them).

  Returns:
    ``(loss, aux)``: the scalar float32 loss, and a dict with the scalar metrics
    :data:`METRIC_KEYS` (``'loss'``; ``'ot'``, the batch mean of :math:`L_{OT}`; ``'var'`` and
    ``'cov'``, the sums over both views; ``'marginal_error'`` and ``'plan_entropy'``, batch
    means) and the (B, N, M) plans under :data:`PLAN_KEY`. With ``alignment='location_mse'``
    the metrics are :data:`LOCATION_MSE_METRIC_KEYS` and there is no plan.
  """
  if alignment not in ALIGNMENTS:
    raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
  var, cov = _variance_covariance(q_s, q_t, varcov_per_position)
  if alignment == "location_mse":
    if positions is None:
      raise ValueError("alignment='location_mse' needs the tokens' source-image `positions`")
    align = location_match.location_matched_mse(q_s, q_t, *positions)
    loss = alpha * align + beta * var + eta * cov
    aux = {"location_mse": align, "var": var, "cov": cov}
    if global_weight:
      aux["global"] = _image_level_term(q_s, q_t, teacher_tau, predictions, targets)
      loss = loss + global_weight * aux["global"]
    return loss, {"loss": loss, **aux}
  x_s, x_t = q_s, q_t
  if center_positions:
    x_s, x_t = _center_positions(x_s), _center_positions(x_t)
  if center_tokens:
    x_s, x_t = _center(x_s), _center(x_t)
  offset = None
  if location_weight:
    if location is None:
      raise ValueError("location_weight > 0 needs the (B, N, M) location cost `location`")
    offset = location_weight * location
  result = ot.batched_transport(
      x_s,
      x_t,
      cost_offset=offset,
      epsilon=epsilon,
      num_iters=num_iters,
      cost=cost,
      lse_mode=lse_mode,
      grad_mode=grad_mode,
  )
  ot_loss = jnp.mean(result.loss)
  loss = alpha * ot_loss + beta * var + eta * cov
  extra = {}
  if global_weight:
    extra["global"] = _image_level_term(q_s, q_t, teacher_tau, predictions, targets)
    loss = loss + global_weight * extra["global"]
  aux = {
      "loss": loss,
      "ot": ot_loss,
      "var": var,
      "cov": cov,
      "marginal_error": jnp.mean(result.marginal_error),
      "plan_entropy": jnp.mean(result.entropy),
      PLAN_KEY: result.plan,
      **extra,
  }
  aux["loss"] = loss
  return loss, aux


def global_term(q_s: jax.Array, q_t: jax.Array) -> jax.Array:
  """VICReg (Bardes et al. 2022, weights 25/25/1) of the two views' mean tokens, ``(B, D)`` each.

  The image-level counterpart of the dense terms: invariance of each image's mean token across
  the two views, variance and decorrelation of the mean tokens across the batch.
  """
  loss, _ = vicreg.vicreg_loss(jnp.mean(q_s, axis=1), jnp.mean(q_t, axis=1))
  return loss


def _image_level_term(q_s, q_t, teacher_tau, predictions, targets) -> jax.Array:
  """VICReg of the mean tokens (:func:`global_term`), or with a teacher BYOL's loss."""
  if not teacher_tau:
    return global_term(q_s, q_t)
  if predictions is None or targets is None:
    raise ValueError("teacher_tau > 0 needs the online `predictions` (p_s, p_t) and the "
                     "teacher's `targets` (z_s, z_t) of the pooled features")
  loss, _ = byol.byol_loss(*predictions, *targets)
  return loss
