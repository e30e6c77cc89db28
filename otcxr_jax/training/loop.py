"""The train loop shared by every mode (pretraining, probes, fine-tuning, segmentation).

What differs between modes is only the model, the loss function and the batches; everything
else — sharding, the jitted functional step, checkpoints and exact resumption, logging, progress,
preemption and non-finite losses — is here, once.

Preemption: a SIGTERM (what TPU VMs, SLURM and Kubernetes send before taking a machine away) makes
the run save a checkpoint at the next step boundary and raise :class:`Preempted`; the same command
run again resumes from it. With several processes, a SIGTERM seen by any of them stops all of them
at the same step.

Non-finite losses: the jitted step checks its loss and gradient norm and, when either is not
finite, keeps the previous parameters, model state and optimiser state (the step counter and the
data still advance), so the state never holds NaN/Inf. ``LoopConfig.on_nonfinite`` then decides:
``'stop'`` raises :class:`NonFiniteLossError` naming the step; ``'skip'`` goes on and logs the
number of skipped steps as ``skipped_steps``.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import nnx

from otcxr_jax import errors
from otcxr_jax.models import target as target_lib
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import sharding as shard_lib
from otcxr_jax.training import state as state_lib
from otcxr_jax.training.progress import Progress
from otcxr_jax.training.writers import MetricLog

NONFINITE_POLICIES = ("stop", "skip")

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
  on_nonfinite: str = "stop"  # 'stop' | 'skip' (see the module docstring)

  def __post_init__(self):
    if self.on_nonfinite not in NONFINITE_POLICIES:
      raise ValueError(f"LoopConfig.on_nonfinite={self.on_nonfinite!r}: expected one of "
                       f"{NONFINITE_POLICIES}.")


@dataclasses.dataclass
class LoopResult:
  graphdef: Any
  state: state_lib.TrainState
  history: list[dict[str, float]]
  resumed_from: int | None
  stopped_early: str | None = None  # the reason a hook gave for ending the run early

  def model(self) -> nnx.Module:
    """The trained model in evaluation mode (on host-replicated parameters)."""
    return state_lib.eval_model(self.graphdef, self.state)


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """A step's loss or gradient was NaN/Inf (the message names the step and the last checkpoint)."""


class StopTraining(Exception):
  """Raised by a hook to end the run early (e.g. no validation improvement): the loop saves a
  checkpoint of the current step and returns normally with ``LoopResult.stopped_early`` set."""

  def __init__(self, reason: str, extra: dict[str, float] | None = None):
    super().__init__(reason)
    self.reason, self.extra = reason, dict(extra or {})


class Preempted(Exception):
  """The run received SIGTERM and saved a checkpoint at ``step`` in ``directory``."""

  def __init__(self, step: int, directory: epath.Path):
    super().__init__(f"preempted at step {step}; checkpoint saved in {directory}")
    self.step, self.directory = step, directory


def guard_nonfinite(step_fn: Callable) -> Callable:
  """Wraps ``step(state, batch) -> (state, metrics)`` to discard non-finite updates on device.

  Returns ``step(state, batch, skipped) -> (state, metrics, finite, skipped)``: when the loss or
  the gradient norm is not finite, the previous parameters, model and optimiser state are kept
  (only ``state.step`` advances) and the int32 counter ``skipped`` is incremented. Everything is
  selected with ``jnp.where`` inside the jitted step: no host synchronisation.
  """

  def step(state: state_lib.TrainState, batch, skipped: jax.Array):
    new, metrics = step_fn(state, batch)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    return kept.replace(step=new.step), metrics, finite, skipped + (~finite).astype(jnp.int32)

  return step


def jit_train_step(graphdef, loss_fn: state_lib.LossFn, tx: optax.GradientTransformation,
                   mesh: jax.sharding.Mesh, trainable: Any = nnx.Param,
                   target_decay: state_lib.TargetDecay | None = None):
  """The loop's jitted step ``(state, batch, skipped) -> (state, metrics, finite, skipped)``.

  :func:`guard_nonfinite` around ``state.make_train_step``; the state (donated) and the skip
  counter replicated over ``mesh``, the batch split along its first axis. Benchmarks time this
  very function (same computation, so a persistent compilation cache serves both).
  """
  repl = shard_lib.replicated(mesh)
  return jax.jit(guard_nonfinite(state_lib.make_train_step(graphdef, loss_fn, tx, trainable,
                                                           target_decay)),
                 in_shardings=(repl, shard_lib.batch_sharded(mesh), repl),
                 out_shardings=(repl, repl, repl, repl), donate_argnums=(0,))


class _SigtermFlag:
  """Records SIGTERM while installed (main thread only); restores the previous handler on exit."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def any_process(self) -> bool:
    """Whether any process has received SIGTERM (every process must stop at the same step:
    the checkpoint is written by all of them together). One tiny all-gather per step when
    several processes run, none otherwise."""
    if jax.process_count() == 1:
      return self.received
    flags = multihost_utils.process_allgather(np.int32(self.received))
    return bool(np.any(flags))

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def run(*, name: str, workdir: str | epath.PathLike, model: nnx.Module,
        loss_fn: state_lib.LossFn, tx: optax.GradientTransformation,
        batches: Iterator[dict[str, np.ndarray]], global_batch_size: int, config: LoopConfig,
        rng: jax.Array, mesh: jax.sharding.Mesh | None = None, trainable: Any = nnx.Param,
        schedule: optax.Schedule | None = None, hooks: Sequence[Hook] = (),
        target_decay: state_lib.TargetDecay | None = None) -> LoopResult:
  """Trains ``model`` for ``config.num_steps`` steps, resuming from ``<workdir>/checkpoints/<name>``.

  Args:
    name: run name; checkpoints, metrics and TensorBoard logs are kept under it.
    batches: a grain iterator of per-process numpy batches (checkpointed with the state).
    global_batch_size: examples per step over all processes (for throughput and checks).
    trainable: nnx filter of the trained parameters; the rest of the model is frozen.
    schedule: the learning-rate schedule, logged as ``learning_rate``.
    target_decay: τ(step) of the model's target networks (``models/target.py``), required
      exactly when the model has one; see ``state.make_train_step``.

  Raises:
    (A hook raising :class:`StopTraining` ends the run early, after a checkpoint.)
    Preempted: on SIGTERM, after saving a checkpoint of the last completed step.
    NonFiniteLossError: with ``on_nonfinite='stop'``, at the first step whose loss or gradient
      norm is not finite (that step's update is not applied).
  """
  mesh = mesh or shard_lib.make_mesh()
  shard_lib.check_batch_size(global_batch_size, mesh)
  workdir = epath.Path(workdir)
  _check_targets(name, model, target_decay)
  graphdef, state = state_lib.create_train_state(model, tx, rng, trainable)
  state = shard_lib.replicate(state, mesh)
  checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints" / name,
                                       save_every=config.checkpoint_every,
                                       max_to_keep=config.max_to_keep, cleanup_tmp=True)
  state, resumed_from = _restore(name, checkpointer, state, batches)
  step_fn = jit_train_step(graphdef, loss_fn, tx, mesh, trainable, target_decay)
  skipped = jax.device_put(jnp.zeros((), jnp.int32), shard_lib.replicated(mesh))
  check_finite = _finite_check(name, config, checkpointer)

  # Records after the restored step were logged by a run that did not checkpoint them: dropped,
  # this run logs those steps again.
  log = MetricLog(workdir, name, tensorboard=config.tensorboard, resumed_from=resumed_from or 0)
  progress = Progress(total_steps=config.num_steps, examples_per_step=global_batch_size,
                      name=name)
  history: list[dict[str, float]] = []
  step = int(state.step)
  first = step
  pending = None  # (finite flag, step): checked once the next step is dispatched
  stopped_early = None
  try:
    with _SigtermFlag() as sigterm:
      while step < config.num_steps:
        batch = shard_lib.to_global(next(batches), mesh)
        state, metrics, finite, skipped = step_fn(state, batch, skipped)
        step += 1
        if pending is not None:
          check_finite(*pending)  # the device is already busy with this step
        pending = (finite, step)
        if step == first + 1:
          jax.block_until_ready(metrics)
          progress.start(step)
        last = step == config.num_steps
        record = {}  # this step's logged values: one record per step
        if step % config.log_every == 0 or last:
          check_finite(*pending)
          record.update(_logged_scalars(step, metrics, skipped, progress, schedule))
        if config.hook_every and step % config.hook_every == 0:
          extra, stopped_early = _run_hooks(hooks, step, graphdef, state)
          record.update(extra)
        if record:
          log.write(step, record)
          history.append({"step": step, **record})
        if stopped_early and jax.process_index() == 0:
          print(f"[{name}] stopped early at step {step}: {stopped_early}", flush=True)
        periodic = config.checkpoint_every > 0 and step % config.checkpoint_every == 0
        preempted = sigterm.any_process()
        if last or preempted or periodic or stopped_early:
          check_finite(*pending)  # never checkpoint past an unchecked step
          checkpointer.maybe_save(step, state, batches, force=True)
        if stopped_early:
          break
        if preempted and not last:
          raise Preempted(step, checkpointer.directory)
  finally:
    log.close()
    checkpointer.close()
  return LoopResult(graphdef=graphdef, state=state, history=history, resumed_from=resumed_from,
                    stopped_early=stopped_early)


def _check_targets(name: str, model: nnx.Module,
                   target_decay: state_lib.TargetDecay | None) -> None:
  """Refuses a model with a target network and no ``target_decay``, or the other way round."""
  has_targets = bool(target_lib.target_pairs(model))
  if has_targets != (target_decay is not None):
    raise ValueError(f"[{name}] the model {'has a' if has_targets else 'has no'} target network "
                     f"but target_decay is {'None' if target_decay is None else 'given'}: pass "
                     f"target_decay exactly when the model holds an EMATarget.")


def _restore(name: str, checkpointer: ckpt_lib.Checkpointer, state: state_lib.TrainState,
             batches) -> tuple[state_lib.TrainState, int | None]:
  """``(state, resumed_from)``: the newest intact checkpoint's state and step (the data iterator
  restored with it), or ``(state, None)`` without one. The checkpointer is closed on failure."""
  try:
    restored, _ = checkpointer.restore_newest_intact(ckpt_lib.abstract_like(state), batches,
                                                     name=name)
  except BaseException:
    checkpointer.close()
    raise
  if restored is None:
    return state, None
  resumed_from = int(restored.step)
  logging.info("[%s] resumed from %s at step %d", name, checkpointer.directory, resumed_from)
  if jax.process_index() == 0:
    print(f"[{name}] resumed from step {resumed_from} ({checkpointer.directory})", flush=True)
  return restored, resumed_from


def _finite_check(name: str, config: LoopConfig,
                  checkpointer: ckpt_lib.Checkpointer) -> Callable[[jax.Array, int], None]:
  """``check_finite(finite, at_step)``: with ``on_nonfinite='stop'``, raises
  :class:`NonFiniteLossError` when the step's loss or gradient was not finite."""

  def check_finite(finite: jax.Array, at_step: int) -> None:
    if config.on_nonfinite == "stop" and not bool(finite):
      raise NonFiniteLossError(
          f"[{name}] loss or gradient is not finite at step {at_step}; last good checkpoint: "
          f"step {checkpointer.latest_step} in {checkpointer.directory} (the update of step "
          f"{at_step} was not applied; train.on_nonfinite='skip' goes on without it)")

  return check_finite


def _logged_scalars(step: int, metrics: dict, skipped: jax.Array, progress: Progress,
                    schedule: optax.Schedule | None) -> dict[str, float]:
  """The step's metrics as floats, with the skipped steps, the throughput and the learning rate;
  process 0 prints the progress line."""
  scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
  scalars["skipped_steps"] = float(skipped)
  line, rate = progress.line(step, {k: scalars[k] for k in _shown(scalars)})
  scalars["images_per_sec"] = rate
  if schedule is not None:
    scalars["learning_rate"] = float(schedule(step - 1))
  if jax.process_index() == 0:
    print(line, flush=True)
  return scalars


def _run_hooks(hooks: Sequence[Hook], step: int, graphdef,
               state: state_lib.TrainState) -> tuple[dict[str, float], str | None]:
  """``(values, stopped_early)``: the hooks' logged values, and the reason of the first hook that
  raised :class:`StopTraining` (the later hooks do not run), or None."""
  values, stopped_early = {}, None
  for hook in hooks:
    try:
      extra = hook(step, graphdef, state)
    except StopTraining as stop:
      extra, stopped_early = stop.extra, stop.reason
    values.update(extra or {})
    if stopped_early:
      break
  return values, stopped_early


def _shown(scalars: dict[str, float]) -> list[str]:
  preferred = ["loss", "ot", "var", "cov", "global", "marginal_error"]
  shown = [k for k in preferred if k in scalars] or ["loss"]
  return shown + (["skipped_steps"] if scalars.get("skipped_steps") else [])
