"""Pictures of what the pretraining head does: transport plans and CV-SIM attention."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from otcxr_jax.data import augment
from otcxr_jax.models import OTCXRModel
from otcxr_jax.objectives import otcxr as otcxr_objective


@dataclasses.dataclass
class PairExamples:
  views_s: np.ndarray       # (n, S, S, C) in [0, 1]
  views_t: np.ndarray
  plans: np.ndarray         # (n, N, N), each summing to 1
  attention_s: np.ndarray   # (n, heads, N, N): view s tokens attending to view t
  grid: tuple[int, int]


def pair_examples(model: OTCXRModel, images_uint8: np.ndarray, *, aug: augment.AugmentConfig,
                  objective: otcxr_objective.OTCXRObjectiveConfig, seed: int = 0
                  ) -> PairExamples:
  """Two augmented views of each image, their transport plan and CV-SIM attention maps.

  The training loss itself (``methods.otcxr.pretraining_loss``), jitted: one compiled program
  instead of hundreds of eagerly dispatched operations.
  """
  from otcxr_jax.methods.otcxr import pretraining_loss  # the training loss, reused as is
  model.eval()
  graphdef, state = nnx.split(model)
  objective = dataclasses.asdict(objective)
  with_attention = model.cvsim is not None

  @jax.jit
  def run(state, images, key):
    _, aux, views, out = pretraining_loss(nnx.merge(graphdef, state, copy=True), images, key, aug,
                                          objective, return_attention=with_attention)
    return aux[otcxr_objective.PLAN_KEY], views, out

  images = jnp.asarray(images_uint8, jnp.float32) / 255.0
  plans, views, out = run(state, images, jax.random.key(seed))
  attention = None if out.attention_s is None else np.asarray(out.attention_s)
  return PairExamples(views_s=np.asarray(views.view_s), views_t=np.asarray(views.view_t),
                      plans=np.asarray(plans), attention_s=attention, grid=tuple(out.grid))
