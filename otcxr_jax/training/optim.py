"""Optimisers (LARS, AdamW, SGD) with linear warm-up and cosine decay.

Following SimCLR/VICReg practice, the peak learning rate is ``base_learning_rate * batch / 256``,
and biases and normalisation parameters (every parameter with fewer than two dimensions) are
excluded from weight decay and from LARS' trust-ratio adaptation.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

OPTIMIZERS = ("lars", "adamw", "sgd")


def _matrix_mask(params: Any) -> Any:
  """True for weight matrices/kernels (ndim >= 2), False for biases, norms and embeddings' 1-D."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def peak_learning_rate(base_learning_rate: float, batch_size: int) -> float:
  return base_learning_rate * batch_size / 256.0


def make_schedule(*, peak: float, total_steps: int, warmup_steps: int,
                  end_factor: float = 0.0) -> optax.Schedule:
  """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, cosine decay to ``peak*end_factor``."""
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=peak * end_factor)


def make_optimizer(name: str, *, schedule: optax.Schedule, weight_decay: float,
                   momentum: float = 0.9, b1: float = 0.9, b2: float = 0.999,
                   grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
  """Builds the optimiser ``name`` (one of :data:`OPTIMIZERS`)."""
  if name == "lars":
    tx = optax.lars(schedule, weight_decay=weight_decay, weight_decay_mask=_matrix_mask,
                    trust_ratio_mask=_matrix_mask, momentum=momentum)
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=_matrix_mask)
  elif name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(weight_decay, mask=_matrix_mask),
                     optax.sgd(schedule, momentum=momentum))
  else:
    raise ValueError(f"config.optim.name={name!r}: expected one of {OPTIMIZERS}.")
  if grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx
