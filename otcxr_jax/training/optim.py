"""Optimisers (LARS, AdamW, SGD) with linear warm-up and cosine decay.

Following SimCLR/VICReg practice, the peak learning rate is ``base_learning_rate * batch / 256``,
and biases and normalisation parameters (every parameter with fewer than two dimensions) are
excluded from weight decay and from LARS' trust-ratio adaptation. :func:`per_submodule` gives
each top-level submodule of a model its own optimiser (e.g. a smaller learning rate for a
pretrained encoder than for a new head).
"""

from __future__ import annotations

from typing import Any, Mapping

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


def pretraining_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``(tx, schedule)`` of a pretraining run: ``config.optim`` at the peak learning rate of
  ``config.train.batch_size``, over ``config.train.num_steps``."""
  o = config.optim
  schedule = make_schedule(
      peak=peak_learning_rate(o.base_learning_rate, config.train.batch_size),
      total_steps=config.train.num_steps, warmup_steps=o.warmup_steps)
  tx = make_optimizer(o.name, schedule=schedule, weight_decay=o.weight_decay,
                      momentum=o.momentum, b1=o.b1, b2=o.b2, grad_clip_norm=o.grad_clip_norm)
  return tx, schedule


def per_submodule(transforms: Mapping[str, optax.GradientTransformation]
                  ) -> optax.GradientTransformation:
  """Updates the parameters of each top-level submodule ``model.<name>`` with ``transforms[name]``.

  ``optax.multi_transform`` labelled by the first key of each parameter's path: with
  ``{'encoder': tx_e, 'head': tx_h}``, ``params['encoder']`` is updated by ``tx_e`` alone and
  ``params['head']`` by ``tx_h`` alone, each with its own state (and schedule).

  Raises:
    ValueError: (at ``init``) a top-level submodule has no transform.
  """
  transforms = dict(transforms)

  def labels(params):
    def label(path, _):
      name = str(getattr(path[0], "key", path[0]))
      if name not in transforms:
        raise ValueError(f"parameters under '{name}' have no optimiser; per_submodule was given "
                         f"{sorted(transforms)}")
      return name
    return jax.tree_util.tree_map_with_path(label, params)

  return optax.multi_transform(transforms, labels)
