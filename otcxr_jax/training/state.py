"""The train state and the one functional train step every mode shares.

The model is split once (``nnx.split``) into a static graph definition, the trainable parameters
and everything else (BatchNorm statistics, frozen parameters). The step is a pure function of
arrays, jitted once with data-parallel shardings: no per-call Python graph traversal as with
``nnx.jit``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

# loss_fn(model, batch, rng) -> (scalar loss, {name: scalar metric})
LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], jax.Array],
                  tuple[jax.Array, dict[str, jax.Array]]]


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


def make_train_step(graphdef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    trainable: Any = nnx.Param):
  """Builds ``step(state, batch) -> (state, metrics)``; jit it with shardings (see loop.py).

  ``trainable`` must be the filter the state was created with (:func:`create_train_state`).
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
