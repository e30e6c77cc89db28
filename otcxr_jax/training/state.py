"""The train state and the one functional train step every mode shares.

The model is split once (``nnx.split``) into a static graph definition, the trainable parameters
and everything else (BatchNorm statistics, frozen parameters, target networks). The step is a pure
function of arrays, jitted once with data-parallel shardings: no per-call Python graph traversal
as with ``nnx.jit``.

Target networks (``models/target.py``, BYOL's ξ) live in the non-trained part of the state; a step
given ``target_decay`` moves them towards their online twins after the optimiser update.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from otcxr_jax.models import target as target_lib
from otcxr_jax.objectives import byol

# loss_fn(model, batch, rng) -> (scalar loss, {name: scalar metric})
LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], jax.Array],
                  tuple[jax.Array, dict[str, jax.Array]]]
# target_decay(step) -> τ in [0, 1], the EMA decay of the target networks at that step
TargetDecay = Callable[[jax.Array], jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly: checkpointed as one pytree."""
  step: jax.Array
  params: nnx.State          # trained by the optimiser
  model_state: nnx.State     # BatchNorm statistics, frozen parameters, ...
  opt_state: optax.OptState
  rng: jax.Array             # base key; step k uses fold_in(rng, k)


def split_model(model: nnx.Module, trainable: Any = nnx.Param):
  """Returns ``(graphdef, trainable_state, other_state)``."""
  return nnx.split(model, trainable, ...)


def merge_model(graphdef, params: nnx.State, model_state: nnx.State) -> nnx.Module:
  # copy=True: fresh Variables at the current trace level, so BatchNorm may update them.
  return nnx.merge(graphdef, params, model_state, copy=True)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       trainable: Any = nnx.Param):
  graphdef, params, model_state = split_model(model, trainable)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                     opt_state=tx.init(params), rng=rng)
  return graphdef, state


def update_targets(model: nnx.Module, tau: jax.Array) -> None:
  """``ξ ← τ ξ + (1 - τ) θ`` (`byol.ema_update`) for every target network of ``model``, in place."""
  for target, online in target_lib.target_pairs(model):
    xi = nnx.state(target, target_lib.TargetParam)
    theta = nnx.to_pure_dict(nnx.state(online, nnx.Param))
    nnx.replace_by_pure_dict(xi, byol.ema_update(nnx.to_pure_dict(xi), theta, tau))
    nnx.update(target, xi)


def make_train_step(graphdef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    trainable: Any = nnx.Param, target_decay: TargetDecay | None = None):
  """Builds ``step(state, batch) -> (state, metrics)``; jit it with shardings (see loop.py).

  ``trainable`` must be the filter the state was created with (:func:`create_train_state`).
  ``target_decay``: for a model with target networks, τ as a function of the step index ``k``
  (``state.step`` before the update); after the optimiser step, :func:`update_targets` with
  ``τ(k)`` and the updated online parameters. The step then also logs ``target_decay``.
  """

  def step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)

    def compute(params):
      model = merge_model(graphdef, params, state.model_state)
      model.train()
      loss, metrics = loss_fn(model, batch, rng)
      return loss, (metrics, split_model(model, trainable)[2])

    (loss, (metrics, new_rest)), grads = jax.value_and_grad(compute, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = new_rest  # updated BatchNorm statistics; frozen parameters unchanged
    metrics = dict(metrics)
    if target_decay is not None:
      tau = target_decay(state.step)
      model = merge_model(graphdef, params, model_state)
      update_targets(model, tau)
      model_state = split_model(model, trainable)[2]
      metrics["target_decay"] = tau
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state), metrics

  return step


def eval_model(graphdef, state: TrainState) -> nnx.Module:
  """The model of ``state`` in evaluation mode (BatchNorm running statistics)."""
  model = merge_model(graphdef, state.params, state.model_state)
  model.eval()
  return model
