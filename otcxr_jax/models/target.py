"""Target networks: slowly moving copies of some of a model's modules, held out of training.

BYOL (Grill et al., NeurIPS 2020, arXiv 2006.07733, Sec. 3.1) regresses the online network's
predictions onto a *target* network whose weights ξ are an exponential moving average of the
online weights θ, ``ξ ← τ ξ + (1 - τ) θ`` after every optimiser step. Here a model that needs such
a network holds an :class:`EMATarget` attribute whose children are copies of the model's own
modules of the same names, with every ``nnx.Param`` turned into a :class:`TargetParam`:

* the train state splits parameters with the ``nnx.Param`` filter, so target weights land in
  ``TrainState.model_state`` (not trained, no gradient, no optimiser state) and are checkpointed,
  restored and rebuilt (``methods.build_model``) with the rest of the model;
* the train step (``training/state.py``) moves them towards their online twins after each update
  (:func:`target_pairs` gives the pairs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class TargetParam(nnx.Variable):
  """A weight of a target network: not trained, moved towards its online twin by the train step."""


def target_copy(module: nnx.Module) -> nnx.Module:
  """A deep copy of ``module`` whose ``nnx.Param`` s are :class:`TargetParam` s of equal value.

  Other variables (BatchNorm statistics) are copied unchanged. Nothing is shared with ``module``,
  not even array buffers (a train step that donates its state must not see one buffer twice).
  """
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  as_target = jax.tree.map(lambda v: TargetParam(jnp.copy(v.get_value())), params,
                           is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.merge(graphdef, as_target, jax.tree.map(jnp.copy, rest), copy=True)


class EMATarget(nnx.Module):
  """Target copies of modules of the model that owns this one, by attribute name.

  ``EMATarget(encoder=model.encoder, projector=model.projector)`` set as an attribute of
  ``model`` holds ``target.encoder`` and ``target.projector``, copies (:func:`target_copy`) that
  start equal to ``model.encoder`` and ``model.projector`` and afterwards follow them as the train
  step's moving average. Forward passes through the copies are the owner's business.
  """

  def __init__(self, **online: nnx.Module):
    if not online:
      raise ValueError("EMATarget needs at least one module to copy, e.g. "
                       "EMATarget(encoder=encoder).")
    self.names = tuple(online)
    for name, module in online.items():
      setattr(self, name, target_copy(module))


def target_pairs(model: nnx.Module) -> list[tuple[nnx.Module, nnx.Module]]:
  """``[(target module, online module), ...]`` for every :class:`EMATarget` inside ``model``.

  The online twin of ``target.<name>`` is the attribute ``<name>`` of the module that holds the
  ``EMATarget``. Empty when ``model`` has no target network.

  Raises:
    ValueError: an owner lacks the module a target copies, or the two differ in structure.
  """
  nodes = dict(nnx.iter_graph(model))
  pairs = []
  for path, node in nodes.items():
    if not isinstance(node, EMATarget):
      continue
    owner = nodes[path[:-1]]
    for name in node.names:
      online = getattr(owner, name, None)
      if not isinstance(online, nnx.Module):
        raise ValueError(f"EMATarget at {'/'.join(map(str, path))!r} copies {name!r}, but its "
                         f"owner {type(owner).__name__} has no module {name!r}.")
      target = getattr(node, name)
      if (jax.tree.structure(nnx.to_pure_dict(nnx.state(target, TargetParam)))
          != jax.tree.structure(nnx.to_pure_dict(nnx.state(online, nnx.Param)))):
        raise ValueError(f"target {name!r} does not have the parameter structure of "
                         f"{type(owner).__name__}.{name}.")
      pairs.append((target, online))
  return pairs
