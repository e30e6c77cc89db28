r"""Variance and covariance regularisers of VICReg (Bardes, Ponce, LeCun, ICLR 2022).

Both act on a set of embeddings :math:`z \in \mathbb R^{N\times D}` whose rows are samples; for
dense maps the samples are all (batch item, position) pairs, so a (B, N, D) input is flattened to
(B·N, D). Statistics use the unbiased estimator (divide by N - 1) as in VICReg, and are computed
in float32 (full-precision matmuls also on TPU). Under a sharded ``jax.jit`` they are global-batch
statistics.

* variance: :math:`\frac1D\sum_d \max(0, \gamma - \sqrt{\operatorname{Var}(z_{:,d}) + \epsilon})`
  keeps every dimension's standard deviation above :math:`\gamma` (prevents collapse);
* covariance: :math:`\frac1D\sum_{d\ne d'} \operatorname{Cov}(z)_{dd'}^2` decorrelates dimensions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _as_samples(z: jax.Array) -> jax.Array:
  """(N, D) or (B, N, D) embeddings as float32 (samples, D), N·B >= 2."""
  if z.ndim not in (2, 3):
    raise ValueError(f"z must have shape (N, D) or (B, N, D), got shape {z.shape}")
  z = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
  if z.shape[0] < 2:
    raise ValueError(f"z needs at least 2 samples for an unbiased variance, got {z.shape[0]}")
  return z


def variance_loss(z: jax.Array, gamma: float = 1.0, eps: float = 1e-4) -> jax.Array:
  """VICReg variance hinge: mean over dimensions of ``relu(gamma - sqrt(Var(z_d) + eps))``.

  Args:
    z: (N, D) or (B, N, D) embeddings.
    gamma: target standard deviation.
    eps: added to the variance for a finite gradient at zero variance.

  Returns:
    Scalar float32 loss.
  """
  z = _as_samples(z)
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
  return jnp.mean(jax.nn.relu(gamma - std))


def covariance_loss(z: jax.Array) -> jax.Array:
  """VICReg covariance penalty: squared off-diagonal covariance entries summed, divided by D.

  Args:
    z: (N, D) or (B, N, D) embeddings.

  Returns:
    Scalar float32 loss.
  """
  z = _as_samples(z)
  n, d = z.shape
  centred = z - jnp.mean(z, axis=0)
  cov = jnp.matmul(centred.T, centred, precision=jax.lax.Precision.HIGHEST) / (n - 1)
  off_diagonal_sq = jnp.sum(cov**2) - jnp.sum(jnp.diagonal(cov) ** 2)
  return off_diagonal_sq / d
