"""BYOL: the symmetrised regression loss, the target network's EMA update and its τ schedule.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020, arXiv 2006.07733, Sec. 3.1 (Eq. 2 and the target update) and Sec. 3.2 (schedule).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from otcxr_jax.objectives import _baseline_common as common


@dataclasses.dataclass(frozen=True)
class BYOLConfig:
  """Hyperparameters of BYOL's target network (the loss itself has none).

  Its fields are the keyword arguments of `byol_tau`, not of `byol_loss`.

  Attributes:
    base_tau: τ_base in [0, 1], the EMA decay at step 0; 0.996 is the paper's ImageNet value.
  """

  base_tau: float = 0.996

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first field outside its valid range."""
    common.check_number("BYOLConfig", "base_tau", self.base_tau, low=0.0, high=1.0)


def byol_loss(p_s: jax.Array, p_t: jax.Array, z_s_target: jax.Array,
              z_t_target: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Symmetrised BYOL loss: each view's online prediction regresses the other view's target.

  With ``q̄ = q / ‖q‖`` and ``sg`` the stop-gradient (targets come from the EMA network)::

    L = (1/B) Σ_b [ ‖p̄_s,b - sg(z̄_t,b)‖² + ‖p̄_t,b - sg(z̄_s,b)‖² ]
      = (1/B) Σ_b [ (2 - 2 cos(p_s,b, z_t,b)) + (2 - 2 cos(p_t,b, z_s,b)) ]

  the paper's ``L_θ,ξ + L̃_θ,ξ`` (Eq. 2 and its swapped-view twin), averaged over the batch.

  Args:
    p_s: ``(B, D)`` online predictions q_θ(z_θ) of the source views.
    p_t: ``(B, D)`` online predictions of the target views.
    z_s_target: ``(B, D)`` target-network projections z'_ξ of the source views.
    z_t_target: ``(B, D)`` target-network projections of the target views.

  Returns:
    ``(loss, metrics)``: the float32 loss in [0, 8] and ``{"loss", "cosine"}``, the mean of
    the two directions' cosines.
  """
  for pred, target, names in ((p_s, z_t_target, ("p_s", "z_t_target")),
                              (p_t, z_s_target, ("p_t", "z_s_target"))):
    common.check_pair(pred, target, names, min_batch=1)

  def cosine(pred, target):
    pred = common.l2_normalize(pred.astype(jnp.float32))
    target = common.l2_normalize(jax.lax.stop_gradient(target).astype(jnp.float32))
    return jnp.sum(pred * target, axis=-1)

  cos_s, cos_t = cosine(p_s, z_t_target), cosine(p_t, z_s_target)
  loss = jnp.mean((2.0 - 2.0 * cos_s) + (2.0 - 2.0 * cos_t))
  return loss, {"loss": loss, "cosine": 0.5 * (jnp.mean(cos_s) + jnp.mean(cos_t))}


def ema_update(target_params: Any, online_params: Any, tau: jax.Array | float) -> Any:
  """BYOL's target update ``ξ ← τ ξ + (1 - τ) θ``, leaf by leaf.

  Args:
    target_params: pytree of the target network's parameters ξ.
    online_params: pytree of the online parameters θ, with the same structure.
    tau: decay τ in [0, 1] (a Python number is checked; a traced scalar is trusted).

  Returns:
    The new target pytree, each leaf in its target dtype.
  """
  if isinstance(tau, (int, float)):
    common.check_number("ema_update", "tau", tau, low=0.0, high=1.0)
  if jax.tree.structure(target_params) != jax.tree.structure(online_params):
    raise ValueError("target_params and online_params must have the same tree structure, got "
                     f"{jax.tree.structure(target_params)} and "
                     f"{jax.tree.structure(online_params)}.")
  return jax.tree.map(lambda t, o: (tau * t + (1.0 - tau) * o).astype(jnp.result_type(t)),
                      target_params, online_params)


def byol_tau(step: jax.Array | int, total_steps: int, base_tau: float = 0.996) -> jax.Array:
  """BYOL's cosine increase of the EMA decay from ``τ_base`` to 1.

  ``τ(k) = 1 - (1 - τ_base) (cos(π k / K) + 1) / 2`` with ``k`` clipped to ``[0, K]``, so
  ``τ(0) = τ_base``, ``τ(K/2) = (1 + τ_base) / 2`` and ``τ(K) = 1``.

  Args:
    step: current step k (may be traced).
    total_steps: K >= 1, the length of training.
    base_tau: τ_base in [0, 1].

  Returns:
    float32 scalar τ(k).
  """
  BYOLConfig(base_tau=base_tau)
  if not (isinstance(total_steps, int) and not isinstance(total_steps, bool) and total_steps >= 1):
    raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}.")
  k = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, float(total_steps))
  return 1.0 - (1.0 - base_tau) * (jnp.cos(math.pi * k / total_steps) + 1.0) / 2.0
