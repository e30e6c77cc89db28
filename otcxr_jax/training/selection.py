"""Model selection on the validation split: a train-loop hook that keeps the best state.

Every ``LoopConfig.hook_every`` steps the hook evaluates the current model (in evaluation mode) on
validation, logs the scores, and when the selection metric improves saves the whole train state
to ``<workdir>/checkpoints/<name>_best``. After ``patience`` evaluations without improvement it
raises :class:`~otcxr_jax.training.loop.StopTraining` (early stopping); the loop then checkpoints
and returns. The test split is never seen here: the caller restores the best state
(:meth:`BestStateHook.restore`) and evaluates test once.

The hook's record (best step and value, every evaluation, whether training stopped early) is kept
in ``<workdir>/<name>_selection.json`` and reloaded on resumption, so a preempted run selects
exactly as an uninterrupted one would, and a rerun of a finished run does not train again.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable

import jax
from etils import epath
from flax import nnx

from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import loop
from otcxr_jax.training import state as state_lib

# evaluate(model in eval mode) -> {name: scalar}; must contain the selection metric.
Evaluate = Callable[[nnx.Module], dict[str, float]]


@dataclasses.dataclass
class SelectionRecord:
  """What the hook has seen so far (JSON-serialisable)."""
  metric: str
  best_step: int | None = None
  best_value: float | None = None
  evaluations: list[dict[str, float]] = dataclasses.field(default_factory=list)
  since_best: int = 0
  stopped_early: bool = False


class BestStateHook:
  """Periodic validation with best-state checkpointing and optional early stopping.

  Args:
    workdir: the run's work directory.
    name: the run name (the same as ``loop.run``'s).
    evaluate: scores a model in evaluation mode on validation.
    metric: the key of ``evaluate``'s result to select on.
    higher_is_better: ``True`` for AUC or Dice, ``False`` for a loss.
    patience: evaluations without improvement before stopping; 0 never stops early.
    prefix: prepended to the logged names (``val_`` by default).
  """

  def __init__(self, workdir: str | epath.PathLike, name: str, evaluate: Evaluate, *,
               metric: str, higher_is_better: bool = True, patience: int = 0,
               prefix: str = "val_"):
    if patience < 0:
      raise ValueError(f"patience must be >= 0, got {patience}")
    workdir = epath.Path(workdir)
    self._evaluate = evaluate
    self._sign = 1.0 if higher_is_better else -1.0
    self._patience = patience
    self._prefix = prefix
    self._record_path = workdir / f"{name}_selection.json"
    self._best_dir = workdir / "checkpoints" / f"{name}_best"
    self.record = SelectionRecord(metric=metric)
    if self._record_path.exists():
      stored = json.loads(self._record_path.read_text())
      if stored.get("metric") != metric:
        raise ValueError(f"{self._record_path} selects on {stored.get('metric')!r}, this run on "
                         f"{metric!r}: use another workdir")
      self.record = SelectionRecord(**stored)

  @property
  def done(self) -> bool:
    """Whether an earlier run of this workdir already stopped early."""
    return self.record.stopped_early

  def __call__(self, step: int, graphdef: Any, state: state_lib.TrainState) -> dict[str, float]:
    for earlier in self.record.evaluations:
      if earlier["step"] == step:  # evaluated before a resumption: logged again, not recomputed
        return self._logged(step, {k: v for k, v in earlier.items() if k != "step"})
    scores = {k: float(v) for k, v in self._evaluate(state_lib.eval_model(graphdef, state)).items()}
    if self.record.metric not in scores:
      raise KeyError(f"evaluate() returned {sorted(scores)}, without the selection metric "
                     f"{self.record.metric!r}")
    value = scores[self.record.metric]
    r = self.record
    improved = math.isfinite(value) and (
        r.best_value is None or self._sign * value > self._sign * r.best_value)
    if improved:
      checkpointer = ckpt_lib.Checkpointer(self._best_dir, save_every=0, max_to_keep=1)
      checkpointer.maybe_save(step, state, force=True)
      checkpointer.close()
      r.best_step, r.best_value, r.since_best = step, value, 0
    else:
      r.since_best += 1
    r.evaluations.append({"step": step, **scores})
    r.stopped_early = bool(self._patience) and r.since_best >= self._patience
    self._write()
    logged = self._logged(step, scores)
    if jax.process_index() == 0:
      print(f"[selection] step {step}: {r.metric} {value:.4f} (best {r.best_value:.4f} at step "
            f"{r.best_step})" if r.best_value is not None else
            f"[selection] step {step}: {r.metric} {value}", flush=True)
    if r.stopped_early:
      raise loop.StopTraining(
          f"no improvement of validation {r.metric} in {self._patience} evaluations (best "
          f"{r.best_value:.4f} at step {r.best_step})", extra=logged)
    return logged

  def _logged(self, step: int, scores: dict[str, float]) -> dict[str, float]:
    """The values logged at ``step``: its scores and the best selection metric up to it."""
    values = [e[self.record.metric] for e in self.record.evaluations if e["step"] <= step]
    values = [v for v in values if math.isfinite(v)]
    best = (max(values, key=lambda v: self._sign * v) if values
            else scores[self.record.metric])
    logged = {self._prefix + k: v for k, v in scores.items()}
    logged[self._prefix + "best_" + self.record.metric] = best
    return logged

  def _write(self) -> None:
    if jax.process_index() == 0:
      self._record_path.parent.mkdir(parents=True, exist_ok=True)
      self._record_path.write_text(json.dumps(dataclasses.asdict(self.record), indent=2))

  def restore(self, state_like: state_lib.TrainState) -> state_lib.TrainState | None:
    """The best state so far, restored into the structure and shardings of ``state_like``."""
    if self.record.best_step is None:
      return None
    checkpointer = ckpt_lib.Checkpointer(self._best_dir, save_every=0, max_to_keep=1)
    try:
      return checkpointer.restore(ckpt_lib.abstract_like(state_like), step=self.record.best_step)
    finally:
      checkpointer.close()
