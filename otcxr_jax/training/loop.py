"""The train loop shared by every mode (pretraining, probes, fine-tuning, segmentation).

What differs between modes is only the model, the loss function and the batches; everything
else — sharding, the jitted functional step, checkpoints and exact resumption, logging, progress —
is here, once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import nnx

from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import sharding as shard_lib
from otcxr_jax.training import state as state_lib
from otcxr_jax.training.progress import Progress
from otcxr_jax.training.writers import MetricLog

# hook(step, graphdef, state) -> optional dict of scalars to log (periodic evaluators)
Hook = Callable[[int, Any, state_lib.TrainState], dict | None]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  num_steps: int
  log_every: int = 50
  checkpoint_every: int = 500
  max_to_keep: int = 2
  tensorboard: bool = True
  hook_every: int = 0


@dataclasses.dataclass
class LoopResult:
  graphdef: Any
  state: state_lib.TrainState
  history: list[dict[str, float]]
  resumed_from: int | None

  def model(self) -> nnx.Module:
    """The trained model in evaluation mode (on host-replicated parameters)."""
    return state_lib.eval_model(self.graphdef, self.state)


class NonFiniteLossError(FloatingPointError):
  pass


def run(*, name: str, workdir: str | epath.PathLike, model: nnx.Module,
        loss_fn: state_lib.LossFn, tx: optax.GradientTransformation,
        batches: Iterator[dict[str, np.ndarray]], global_batch_size: int, config: LoopConfig,
        rng: jax.Array, mesh: jax.sharding.Mesh | None = None, trainable: Any = nnx.Param,
        schedule: optax.Schedule | None = None, hooks: Sequence[Hook] = ()) -> LoopResult:
  """Trains ``model`` for ``config.num_steps`` steps, resuming from ``<workdir>/checkpoints/<name>``.

  Args:
    name: run name; checkpoints, metrics and TensorBoard logs are kept under it.
    batches: a grain iterator of per-process numpy batches (checkpointed with the state).
    global_batch_size: examples per step over all processes (for throughput and checks).
    trainable: nnx filter of the trained parameters; the rest of the model is frozen.
    schedule: the learning-rate schedule, logged as ``learning_rate``.
  """
  mesh = mesh or shard_lib.make_mesh()
  shard_lib.check_batch_size(global_batch_size, mesh)
  workdir = epath.Path(workdir)
  graphdef, state = state_lib.create_train_state(model, tx, rng, trainable)
  state = shard_lib.replicate(state, mesh)

  checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints" / name,
                                       save_every=config.checkpoint_every,
                                       max_to_keep=config.max_to_keep)
  restored = checkpointer.restore(ckpt_lib.abstract_like(state), batches)
  resumed_from = None
  if restored is not None:
    state, resumed_from = restored, int(restored.step)
    logging.info("[%s] resumed from %s at step %d", name, checkpointer.directory, resumed_from)
    print(f"[{name}] resumed from step {resumed_from} ({checkpointer.directory})", flush=True)

  repl = shard_lib.replicated(mesh)
  step_fn = jax.jit(state_lib.make_train_step(graphdef, loss_fn, tx, trainable),
                    in_shardings=(repl, shard_lib.batch_sharded(mesh)),
                    out_shardings=(repl, repl), donate_argnums=(0,))

  log = MetricLog(workdir, name, tensorboard=config.tensorboard)
  progress = Progress(total_steps=config.num_steps, examples_per_step=global_batch_size,
                      name=name)
  history: list[dict[str, float]] = []
  step = int(state.step)
  first = step
  try:
    while step < config.num_steps:
      batch = shard_lib.to_global(next(batches), mesh)
      state, metrics = step_fn(state, batch)
      step += 1
      if step == first + 1:
        jax.block_until_ready(metrics)
        progress.start(step)
      if step % config.log_every == 0 or step == config.num_steps:
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(scalars["loss"]):
          raise NonFiniteLossError(
              f"[{name}] loss is {scalars['loss']} at step {step}; last good checkpoint: "
              f"step {checkpointer.latest_step} in {checkpointer.directory}")
        line, rate = progress.line(step, {k: scalars[k] for k in _shown(scalars)})
        scalars["images_per_sec"] = rate
        if schedule is not None:
          scalars["learning_rate"] = float(schedule(step - 1))
        if jax.process_index() == 0:
          print(line, flush=True)
        log.write(step, scalars)
        history.append({"step": step, **scalars})
      if config.hook_every and step % config.hook_every == 0:
        for hook in hooks:
          extra = hook(step, graphdef, state)
          if extra:
            log.write(step, extra)
            history.append({"step": step, **extra})
      checkpointer.maybe_save(step, state, batches, force=step == config.num_steps)
  finally:
    log.close()
    checkpointer.close()
  return LoopResult(graphdef=graphdef, state=state, history=history, resumed_from=resumed_from)


def _shown(scalars: dict[str, float]) -> list[str]:
  preferred = ["loss", "ot", "var", "cov", "marginal_error"]
  return [k for k in preferred if k in scalars] or ["loss"]
