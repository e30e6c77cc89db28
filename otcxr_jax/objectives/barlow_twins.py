"""Barlow Twins' redundancy-reduction loss on the cross-correlation of two views' embeddings.

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021, arXiv 2103.03230, Eq. (1)-(2) and Algorithm 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from otcxr_jax.objectives import _baseline_common as common


@dataclasses.dataclass(frozen=True)
class BarlowTwinsConfig:
  """Hyperparameters of `barlow_twins_loss` (its keyword arguments).

  Attributes:
    lambda_offdiag: λ >= 0, weight of the redundancy-reduction term; 5e-3 in the paper.
    eps: ε > 0 added to the batch variance before the square root (1e-5, the epsilon of the
      affine-free BatchNorm that standardises the embeddings in the authors' implementation).
  """

  lambda_offdiag: float = 5e-3
  eps: float = 1e-5

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first field outside its valid range."""
    common.check_number("BarlowTwinsConfig", "lambda_offdiag", self.lambda_offdiag, low=0.0)
    common.check_number("BarlowTwinsConfig", "eps", self.eps, low=0.0, low_open=True)


def barlow_twins_loss(z_s: jax.Array, z_t: jax.Array, *, lambda_offdiag: float = 5e-3,
                      eps: float = 1e-5) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Barlow Twins loss ``Σᵢ (1 - Cᵢᵢ)² + λ Σᵢ Σ_{j≠i} Cᵢⱼ²``.

  Each embedding dimension is standardised over the batch, ``ẑ = (z - mean_b z) /
  sqrt(var_b z + ε)`` (biased variance), and ``C = ẑ_sᵀ ẑ_t / N`` is the ``(D, D)``
  cross-correlation of the two views. Under a sharded ``jax.jit`` the batch statistics and ``C``
  are those of the global batch (the authors all-reduce ``C`` across GPUs).

  Args:
    z_s: ``(N, D)`` embeddings of the source views.
    z_t: ``(N, D)`` embeddings of the target views (row ``n`` from the same image as in ``z_s``).
    lambda_offdiag: λ >= 0.
    eps: ε > 0.

  Returns:
    ``(loss, metrics)``: the float32 loss and ``{"loss", "on_diagonal", "off_diagonal"}`` with
    ``on_diagonal = Σᵢ (1 - Cᵢᵢ)²`` and ``off_diagonal = Σ_{i≠j} Cᵢⱼ²`` (unweighted).
  """
  BarlowTwinsConfig(lambda_offdiag=lambda_offdiag, eps=eps)
  common.check_pair(z_s, z_t, ("z_s", "z_t"), min_batch=2)
  n, d = z_s.shape

  def standardise(z):
    z = z.astype(jnp.float32)
    return (z - jnp.mean(z, axis=0)) * jax.lax.rsqrt(jnp.var(z, axis=0) + eps)

  c = standardise(z_s).T @ standardise(z_t) / n
  on_diag = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
  off_diag = jnp.sum(jnp.square(jnp.where(jnp.eye(d, dtype=bool), 0.0, c)))
  loss = on_diag + lambda_offdiag * off_diag
  return loss, {"loss": loss, "on_diagonal": on_diag, "off_diagonal": off_diag}
