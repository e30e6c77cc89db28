"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022, arXiv 2105.04906, Sec. 3.1-3.2, Eq. (1)-(6).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from otcxr_jax.objectives import _baseline_common as common
from otcxr_jax.objectives import regularizers


@dataclasses.dataclass(frozen=True)
class VICRegConfig:
  """Hyperparameters of `vicreg_loss` (its keyword arguments); defaults are the paper's.

  Attributes:
    sim_coeff: λ >= 0, weight of the invariance term (25).
    std_coeff: μ >= 0, weight of the variance terms (25).
    cov_coeff: ν >= 0, weight of the covariance terms (1).
    gamma: γ > 0, target standard deviation of each dimension (1).
    eps: ε > 0 added to the variance before the square root (1e-4).
  """

  sim_coeff: float = 25.0
  std_coeff: float = 25.0
  cov_coeff: float = 1.0
  gamma: float = 1.0
  eps: float = 1e-4

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first field outside its valid range."""
    validate_vicreg_fields(self)


def validate_vicreg_fields(config) -> None:
  """Checks the five VICReg fields of ``config`` (shared with VICRegL's config)."""
  owner = type(config).__name__
  for name in ("sim_coeff", "std_coeff", "cov_coeff"):
    common.check_number(owner, name, getattr(config, name), low=0.0)
  for name in ("gamma", "eps"):
    common.check_number(owner, name, getattr(config, name), low=0.0, low_open=True)


def vicreg_loss(z_s: jax.Array, z_t: jax.Array, *, sim_coeff: float = 25.0,
                std_coeff: float = 25.0, cov_coeff: float = 1.0, gamma: float = 1.0,
                eps: float = 1e-4) -> tuple[jax.Array, dict[str, jax.Array]]:
  """VICReg loss, Eq. (6): ``λ s(Z, Z') + μ [v(Z) + v(Z')] + ν [c(Z) + c(Z')]``.

  ``s(Z, Z') = (1/(N D)) Σ_n ‖z_n - z'_n‖²`` is the mean squared error (the authors' code; the
  paper's Eq. (5) writes the same sum divided by N only). On each branch separately, with
  statistics over the batch (`regularizers.variance_loss` and `regularizers.covariance_loss`),
  ``v(Z) = (1/D) Σ_d max(0, γ - sqrt(Var(Z_{:,d}) + ε))`` (Eq. 1-2) and
  ``c(Z) = (1/D) Σ_{i≠j} Cov(Z)ᵢⱼ²`` (Eq. 3-4), with unbiased (N - 1) estimators. The authors'
  code halves the variance sum (``μ [v(Z) + v(Z')] / 2``); this is the paper's equation. Under a
  sharded ``jax.jit`` the statistics are those of the global batch (the authors all-gather
  embeddings).

  Args:
    z_s: ``(N, D)`` embeddings of the source views.
    z_t: ``(N, D)`` embeddings of the target views (row ``n`` from the same image as in ``z_s``).
    sim_coeff, std_coeff, cov_coeff, gamma, eps: as in `VICRegConfig`.

  Returns:
    ``(loss, metrics)``: the float32 loss and ``{"loss", "invariance", "variance",
    "covariance"}`` with the unweighted ``s``, ``v(Z) + v(Z')`` and ``c(Z) + c(Z')``.
  """
  VICRegConfig(sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff, gamma=gamma,
               eps=eps)
  common.check_pair(z_s, z_t, ("z_s", "z_t"), min_batch=2)
  z_s, z_t = z_s.astype(jnp.float32), z_t.astype(jnp.float32)
  invariance = jnp.mean(jnp.square(z_s - z_t))
  variance = (regularizers.variance_loss(z_s, gamma, eps)
              + regularizers.variance_loss(z_t, gamma, eps))
  covariance = regularizers.covariance_loss(z_s) + regularizers.covariance_loss(z_t)
  loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
  return loss, {"loss": loss, "invariance": invariance, "variance": variance,
                "covariance": covariance}
