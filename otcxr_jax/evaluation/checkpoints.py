"""The encoder an evaluation probes: restored from a pretraining checkpoint, or at random init.

A pretraining checkpoint holds the whole train state (model, optimiser, step, PRNG key; see
``training/checkpoint.py``). The encoder is recovered by rebuilding that state's skeleton exactly as
pretraining does (``pretrain.build_model``, ``pretrain.make_optimizer``,
``state.create_train_state``), restoring the latest step into it and keeping the encoder with its
parameters and BatchNorm running statistics. Before anything is read, the checkpoint's stored tree
metadata is compared with that skeleton, so a checkpoint of another architecture (width, depth,
projector size, optimiser) fails with the first differing parameter instead of deep in orbax.
"""

from __future__ import annotations

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.modes import pretrain
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import state as state_lib

_STATE_ITEM = "state"  # the Composite item name the train state is saved under
# Order in which a mismatch is looked for: the encoder, the other modules, the optimiser and rest.
_MISMATCH_ORDER = ("params/encoder/", "model_state/encoder/", "params/", "model_state/")


def default_checkpoint_dir(workdir: str | epath.PathLike) -> epath.Path:
  """``<workdir>/checkpoints/pretrain``: where ``pretrain.run`` saves its checkpoints."""
  return epath.Path(workdir) / "checkpoints" / pretrain.RUN_NAME


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  """``{'params/encoder/stem/conv/kernel': shape, ...}`` of a state tree or its orbax metadata."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [_key_name(k) for k in path]
    if names[-1] == "value":  # nnx.Variable's array field
      names = names[:-1]
    out["/".join(names)] = tuple(leaf.shape)
  return out


def _check_matches(stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                   where: epath.Path) -> None:
  """Raises ValueError at the first path whose presence or shape differs.

  Paths are visited in the groups of ``_MISMATCH_ORDER`` (each in sorted order), so the message
  names a model parameter rather than the optimiser state that mirrors it.
  """
  group = lambda p: next((i for i, g in enumerate(_MISMATCH_ORDER) if p.startswith(g)),
                         len(_MISMATCH_ORDER))
  paths = sorted(expected.keys() | stored.keys(), key=lambda p: (group(p), p))
  for path in paths:
    if stored.get(path) != expected.get(path):
      describe = lambda s: "absent" if s is None else f"shape {s}"
      raise ValueError(
          f"Checkpoint {where} does not match the model of the config: parameter '{path}' is "
          f"{describe(stored.get(path))} in the checkpoint but {describe(expected.get(path))} in "
          f"the config's model. Set config.model (and config.optim) to the pretraining run's "
          f"values (see its config.json).")


def load_pretrained_encoder(config: ml_collections.ConfigDict,
                            checkpoint_dir: str | epath.PathLike) -> nnx.Module:
  """The encoder of the latest checkpoint in ``checkpoint_dir``, in eval mode.

  Args:
    config: the run config; ``config.model``, ``config.optim`` and ``config.train`` must describe
      the pretraining run that wrote the checkpoint.
    checkpoint_dir: a pretraining run's checkpoint directory (``<workdir>/checkpoints/pretrain``).

  Raises:
    FileNotFoundError: ``checkpoint_dir`` does not exist or holds no checkpoint.
    ValueError: the checkpoint's tree differs from the config's train state (a parameter is
      missing, extra or of another shape); the message names the first such parameter.
  """
  directory = ckpt_lib.absolute(checkpoint_dir)
  if not directory.is_dir():
    raise FileNotFoundError(f"Checkpoint directory {directory} does not exist (config "
                            f"probe.checkpoint_dir); run pretraining first.")
  checkpointer = ckpt_lib.Checkpointer(directory, save_every=0)
  try:
    step = checkpointer.latest_step
    if step is None:
      raise FileNotFoundError(f"Checkpoint directory {directory} holds no checkpoint.")
    model = pretrain.build_model(config, nnx.Rngs(config.seed))
    tx, _ = pretrain.make_optimizer(config)
    rng = jax.random.key_data(jax.random.key(config.seed + 1))
    graphdef, state = state_lib.create_train_state(model, tx, rng)
    abstract = ckpt_lib.abstract_like(state)
    step_dir = directory / str(step)
    stored = ocp.StandardCheckpointHandler().metadata(step_dir / _STATE_ITEM)
    _check_matches(_shapes(stored), _shapes(abstract), step_dir)
    restored = checkpointer.restore(abstract, step=step)
  finally:
    checkpointer.close()
  return state_lib.eval_model(graphdef, restored).encoder


def probe_encoder(config: ml_collections.ConfigDict,
                  workdir: str | epath.PathLike) -> tuple[nnx.Module, dict[str, str]]:
  """The encoder ``config.probe.init`` selects, and a description of where it comes from.

  ``'pretrained'``: :func:`load_pretrained_encoder` of ``config.probe.checkpoint_dir`` (empty:
  ``<workdir>/checkpoints/pretrain``). ``'random'``: the encoder pretraining starts from (same
  seed), BatchNorm statistics as initialised.
  """
  init = config.probe.init
  if init == "random":
    return pretrain.build_model(config, nnx.Rngs(config.seed)).encoder, {"init": init}
  if init != "pretrained":
    raise ValueError(f"config.probe.init={init!r}: expected one of {config_lib.PROBE_INITS}.")
  directory = config.probe.checkpoint_dir or default_checkpoint_dir(workdir)
  encoder = load_pretrained_encoder(config, directory)
  return encoder, {"init": init, "checkpoint_dir": str(ckpt_lib.absolute(directory))}
