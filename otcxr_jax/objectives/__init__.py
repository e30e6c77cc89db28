"""Pure loss functions of arrays: OT alignment, variance/covariance, OTCXR and baselines."""

from otcxr_jax.objectives.ot import (
    OTResult,
    batched_transport,
    cost_matrix,
    default_lse_mode,
    transport_from_cost,
)
from otcxr_jax.objectives.otcxr import OTCXRObjectiveConfig, otcxr_loss
from otcxr_jax.objectives.regularizers import covariance_loss, variance_loss

__all__ = [
    "OTCXRObjectiveConfig",
    "OTResult",
    "batched_transport",
    "cost_matrix",
    "covariance_loss",
    "default_lse_mode",
    "otcxr_loss",
    "transport_from_cost",
    "variance_loss",
]
