"""Fine-tuning (LP-FT): a linear probe, then the whole network, on a label fraction; selected on
validation, tested once.

1. *Start.* ``config.finetune.init='pretrained'``: the encoder variables (parameters and BatchNorm
   statistics) of the latest checkpoint of the run ``finetune.checkpoint_dir`` names
   (``modes/network.py``), a pretraining run (its workdir, or ``<workdir>/checkpoints/pretrain``)
   or a fine-tuning run (its workdir, or ``<workdir>/checkpoints/finetune_best``: its selected
   state); ``'random'``: the encoder pretraining starts from, of the named run's network (of
   ``config.model`` when none is named). The classifier (``evaluation/classifier.py``) is that
   encoder and a :class:`~otcxr_jax.models.LinearClassifier` that standardises the pooled features
   with fixed statistics: the per-feature mean and standard deviation of the pooled features of
   ``finetune.split`` under this initial encoder (evaluation views), stored in the head as
   non-trainable variables (checkpointed and exported with it), like the BatchNorm without affine
   parameters MAE puts before its linear head (He et al., CVPR 2022). Pretrained pooled features
   can vary between images by a small fraction of their mean; this head standardises them.
2. *Stage 1, linear probe* (LP-FT, Kumar et al., ICLR 2022: fine-tuning from a trained head
   distorts the pretrained features less than from a random one, and does better in and out of
   distribution): the head alone on the frozen standardised features of ``finetune.split``,
   computed once and whitened like the frozen linear probe's (``probe.whiten``, default True:
   nearly collinear pretrained features otherwise leave a fixed budget of first-order steps
   short of the logistic regression's optimum, docs/results.md), trained by
   ``linear_probe.train_heads`` (AdamW, the linear probe's ``probe.batch_size`` and
   ``probe.learning_rate``) for ``finetune.linear_probe_epochs`` epochs, and at least the frozen
   probe's ``probe.num_steps`` steps (:func:`linear_probe_budget`), from N(0, 0.01²), one head per
   weight decay of ``probe.weight_decays`` side by side; the head of best validation mean AUC is
   kept with its whitening as the head's fixed projection (``finetune.whitened_head``, the
   default), or folded into its weights (the head then an affine map of the standardised
   features).
   ``linear_probe_epochs=0`` skips the stage (the head stays at N(0, 0.01²)).
3. *Stage 2, fine-tuning* of the whole network from that head on ``finetune.split``
   (``'train_1pct'``, ``'train_10pct'`` or ``'train'``, the nested patient-level label fractions
   of the training split) through the shared loop (``training/loop.run``), for
   ``finetune.num_epochs`` epochs (rounded to the nearest whole number of validation intervals),
   or exactly ``finetune.num_steps`` steps when that is set. Each image gives one on-device
   view, a random resized crop of area fraction ``finetune.crop_scale`` rotated by
   ``U(-finetune.rotation_deg, finetune.rotation_deg)`` (``config_lib.finetune_augment_config``;
   the whole image when the scale is (1, 1) and the angle 0); the loss is the binary
   cross-entropy of the sigmoid logits averaged over images and classes. The optimiser
   ``finetune.optimizer`` updates the encoder and the head with their own peak learning rates
   (``optim.per_submodule``; the encoder's lower: its features are what pretraining gives), each
   with linear warm-up over ``finetune.warmup_epochs`` (or ``warmup_steps``) and cosine decay to
   0, and decoupled weight decay ``finetune.weight_decay`` on weight matrices. The feature
   scales and the projection stay fixed; with ``finetune.track_feature_mean`` (the default) the
   head centres each training batch on its own mean and evaluates with the running mean
   (``models.LinearClassifier``), so a shift every image shares does not swing the logits.
4. *Selection* on validation only: the stage-2 start (step 0: the linear probe's classifier) and
   every ``finetune.eval_every_epochs`` epochs (or ``eval_every`` steps) the validation mean AUC
   is computed and the best state kept in ``<workdir>/checkpoints/finetune_best``
   (``training/selection.BestStateHook``); ``finetune.patience`` evaluations without improvement
   stop the run (0: never), so a budget past convergence ends where the validation curve
   flattens.
5. *Test*: the best state scores the test split once; so does the stage-2 start, only for the
   report (``linear_probe_stage``: its test mean AUC, and fine-tuning minus it with a paired
   bootstrap interval; not for selection). ``<workdir>/metrics.json`` holds the
   per-class and mean AUC with bootstrap 95% intervals, the label fraction, the best step, the
   encoder's origin, the step budgets and both stages' validation curves (``linear_probe``: per
   weight decay, by stage-1 step; ``validation_mean_auc_by_step``: stage 2), plotted against
   epochs in ``<workdir>/validation_curve.png``; ``<workdir>/test_scores.npz`` the test scores
   (``evaluation/score_files.py``).

Epochs are passes over ``finetune.split``: stage 2 runs ``len(split) / finetune.batch_size``
steps per epoch, stage 1 ``len(split) / probe.batch_size``. Defaults (``config_lib``): 100
linear-probe epochs; 50 fine-tuning epochs, validation every epoch, early stopping after 10
evaluations without improvement; AdamW, batch 64, peak rates 1e-5 (encoder) and 1e-4 (head), one
warm-up epoch. The paper (OTCXR, WACV 2025) gives no fine-tuning recipe beyond the common
practice of chest X-ray self-supervised learning it follows, end-to-end fine-tuning for tens of
epochs with the model selected on validation; LP-FT and these values are our choices.

Evaluation views are whole images resized to ``data.image_size``. The loop's other settings
(``log_every``, ``checkpoint_every``, ``keep_checkpoints``, ``tensorboard``, ``compute_dtype``,
``on_nonfinite``) come from ``config.train``. The same command run again resumes an interrupted
run (stage 1's result is kept in ``<workdir>/finetune_start.npz``, the stage-2 start head with its
feature statistics, and ``<workdir>/finetune_linear_probe.json``, so it is not redone); for a
finished one it reloads the selected state and evaluates test again (the same numbers). A rerun
with another config is refused before anything is written (``training/workdir.py``), and so is a
workdir holding another mode's run (its ``config.json`` is what the classifier is rebuilt from).
The selected classifier is loaded with ``evaluation.classifier.load_classifier(workdir)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx

from otcxr_jax import config_lib, models
from otcxr_jax.data import augment, datasets, pipeline
from otcxr_jax.evaluation import classifier, linear_probe, metrics, score_files, whitening
from otcxr_jax.models import LinearClassifier
from otcxr_jax.training import loop, optim, selection, sharding
from otcxr_jax.training import state as state_lib
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0
from otcxr_jax.modes import network
from otcxr_jax.reporting import plots, summary

RUN_NAME = classifier.RUN_NAME
LABEL_FRACTIONS = {"train_1pct": 0.01, "train_10pct": 0.1, "train": 1.0}
SELECTION_METRIC = "mean_auc"
START_FILE = "finetune_start.npz"                   # stage 2's start head and feature statistics
LINEAR_PROBE_RECORD = "finetune_linear_probe.json"  # stage 1: weight decays, validation curves
CURVE_PLOT = "validation_curve.png"


@dataclasses.dataclass(frozen=True)
class StepBudget:
  """One stage's step counts on a split of ``num_images`` images.

  Attributes:
    batch_size: examples per step.
    steps_per_epoch: ``num_images / batch_size`` (one epoch: one pass over the split).
    num_steps: training steps, a multiple of ``eval_every``.
    eval_every: steps between validation evaluations.
    warmup_steps: linear warm-up steps of the learning rate.
  """
  batch_size: int
  steps_per_epoch: float
  num_steps: int
  eval_every: int
  warmup_steps: int = 0

  def epochs(self, step: int) -> float:
    return step / self.steps_per_epoch


def _whole_intervals(epochs: float, steps_per_epoch: float, eval_every: int) -> int:
  """``epochs`` in steps, rounded to the nearest multiple of ``eval_every`` (at least one).

  To the nearest, not up: ``eval_every`` is itself a rounded number of epochs, and rounding up
  would add a whole interval whenever it rounds down (10 epochs of 19,969 images at batch 64,
  validated every 312 steps: 3,120 steps, where rounding up gave 3,432, 11 epochs).
  """
  return max(1, round(epochs * steps_per_epoch / eval_every)) * eval_every


def finetune_budget(config: ml_collections.ConfigDict, num_images: int) -> StepBudget:
  """Stage 2's steps on ``finetune.split`` (``num_images`` images).

  Each count is the config's step field when set, else its epoch field times
  ``num_images / finetune.batch_size``: validation every ``eval_every`` (or
  ``eval_every_epochs``, at least one step), ``num_steps`` (or ``num_epochs``, rounded to the
  nearest multiple of the validation interval, so that the last state is evaluated), warm-up
  ``warmup_steps`` (or ``warmup_epochs``). With ``num_steps`` set and ``eval_every`` not, the
  interval is the largest divisor of ``num_steps`` not above ``eval_every_epochs`` epochs.
  """
  f = config.finetune
  per_epoch = num_images / f.batch_size
  eval_every = (f.eval_every if f.eval_every is not None
                else max(1, round(f.eval_every_epochs * per_epoch)))
  if f.num_steps is None:
    num_steps = _whole_intervals(f.num_epochs, per_epoch, eval_every)
  else:
    num_steps = f.num_steps
    if f.eval_every is None:
      eval_every = max(d for d in range(1, min(eval_every, num_steps) + 1) if num_steps % d == 0)
  warmup = (f.warmup_steps if f.warmup_steps is not None
            else round(f.warmup_epochs * per_epoch))
  return StepBudget(f.batch_size, per_epoch, num_steps, eval_every, warmup)


def linear_probe_budget(config: ml_collections.ConfigDict, num_images: int) -> StepBudget:
  """Stage 1's steps: ``finetune.linear_probe_epochs`` epochs at ``probe.batch_size`` (capped to
  the split as ``linear_probe.train_head`` caps it), validation every ``eval_every_epochs``
  epochs (at least one step), the total rounded to the nearest multiple of that interval, and at
  least the frozen linear probe's own ``probe.num_steps`` (rounded up to whole intervals), so that
  stage 1 reaches the probe's solution at small label fractions too (100 epochs of the 1% split's
  176 images in one batch are 100 steps; the probe takes 600); warm-up is ``train_head``'s (5% of
  the steps)."""
  f = config.finetune
  devices = jax.device_count()
  batch = min(config.probe.batch_size, num_images // devices * devices)
  per_epoch = num_images / batch
  eval_every = max(1, round(f.eval_every_epochs * per_epoch))
  num_steps = _whole_intervals(f.linear_probe_epochs, per_epoch, eval_every)
  if f.linear_probe_epochs > 0:
    num_steps = max(num_steps, -(-config.probe.num_steps // eval_every) * eval_every)
  return StepBudget(batch, per_epoch, num_steps, eval_every, num_steps // 20)


def initial_encoder(config: ml_collections.ConfigDict) -> tuple[nnx.Module, dict]:
  """The encoder ``config.finetune.init`` selects (``config`` resolved by ``network.resolve``),
  and a description of where it comes from."""
  return network.encoder(config, "", with_step=True)


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: one augmented view per image, mean binary cross-entropy."""
  aug = config_lib.finetune_augment_config(config)

  def loss_fn(model: classifier.Classifier, batch, rng):
    images = batch["image"].astype(jnp.float32) / 255.0
    logits = model(augment.augment(rng, images, aug).image)
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean()
    return loss, {}

  return loss_fn


def make_optimizer(config: ml_collections.ConfigDict, budget: StepBudget
                   ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
  """``(tx, {'encoder': schedule, 'head': schedule})``: one optimiser per submodule, each rate
  warmed up over ``budget.warmup_steps`` and decayed to 0 at ``budget.num_steps``."""
  f = config.finetune
  schedules = {
      part: optim.make_schedule(peak=peak, total_steps=budget.num_steps,
                                warmup_steps=budget.warmup_steps)
      for part, peak in (("encoder", f.encoder_learning_rate), ("head", f.head_learning_rate))}
  tx = optim.per_submodule({
      part: optim.make_optimizer(f.optimizer, schedule=schedule, weight_decay=f.weight_decay)
      for part, schedule in schedules.items()})
  return tx, schedules


def loop_config(config: ml_collections.ConfigDict, budget: StepBudget) -> loop.LoopConfig:
  t = config.train
  return loop.LoopConfig(num_steps=budget.num_steps, log_every=t.log_every,
                         checkpoint_every=t.checkpoint_every, max_to_keep=t.keep_checkpoints,
                         tensorboard=t.tensorboard, hook_every=budget.eval_every,
                         on_nonfinite=t.on_nonfinite)


def validation_evaluator(scorer: classifier.Scorer, source
                         ) -> Callable[[nnx.Module], dict[str, float]]:
  """``evaluate(model) -> {'mean_auc': ...}`` on ``source`` (the selection hook's evaluator)."""

  def evaluate(model: nnx.Module) -> dict[str, float]:
    scores, labels = scorer(model, source)
    return {SELECTION_METRIC: metrics.mean_auc(labels, scores)}

  return evaluate


class _HeadCurves:
  """Stage-1 hook: the validation mean AUC of every head (one per weight decay) every hook step,
  kept in a JSON file (weight decay -> step -> AUC) so a resumed stage keeps the points evaluated
  before it stopped."""

  def __init__(self, path: epath.Path, x: np.ndarray, y: np.ndarray,
               weight_decays: Sequence[float]):
    self._path, self._x, self._y = path, x, y
    self._keys = [f"{wd:g}" for wd in weight_decays]
    self.points: dict[str, dict[str, float | None]] = (
        json.loads(path.read_text()) if path.exists() else {k: {} for k in self._keys})

  def __call__(self, step: int, graphdef, state) -> dict[str, float]:
    heads = state_lib.eval_model(graphdef, state)
    kernel, bias = sharding.to_host((heads.kernel[...], heads.bias[...]))
    logged = {}
    for h, key in enumerate(self._keys):
      value = metrics.mean_auc(self._y, self._x @ kernel[h] + bias[h])
      self.points[key][str(step)] = _finite_or_none(value)
      logged[f"val_mean_auc_wd{key}"] = value
    if jax.process_index() == 0:
      self._path.parent.mkdir(parents=True, exist_ok=True)
      self._path.write_text(json.dumps(self.points))
    return logged


@dataclasses.dataclass
class LinearProbeStage:
  """Stage 1's result: the selected head (on the head's standardised features; a head trained
  on whitened ones is folded back, ``whitening.fold``) and what selected it."""
  kernel: np.ndarray                               # (C, K)
  bias: np.ndarray                                 # (K,)
  weight_decay: float
  validation_mean_auc: float                       # of the selected head (NaN if undefined)
  by_weight_decay: dict[str, float | None]         # final validation mean AUC per weight decay
  curves: dict[str, dict[str, float | None]]       # weight decay -> stage-1 step -> AUC
  budget: StepBudget
  whitened: bool = False                           # trained on whitened inputs
  projection: np.ndarray | None = None             # (C, r) whitening kept by a whitening head;
                                                   # None: folded into kernel and bias


def train_linear_probe(config: ml_collections.ConfigDict, head: LinearClassifier,
                       train: tuple[np.ndarray, np.ndarray],
                       validation: tuple[np.ndarray, np.ndarray], workdir: epath.Path
                       ) -> LinearProbeStage:
  """Stage 1: the linear probe of ``head`` (its feature statistics set) on frozen features.

  ``train`` and ``validation`` are ``(pooled features, labels)`` of the fine-tuning split and of
  validation under the initial encoder. Both are standardised by ``head`` itself and, with
  ``config.probe.whiten`` (the default; at most ``whitening.MAX_FEATURES`` features), whitened
  with the training features' statistics as the frozen probe does, then one head
  per weight decay of ``config.probe.weight_decays`` is trained, side by side, by
  ``linear_probe.train_heads`` (``probe.batch_size``, ``probe.learning_rate``, seed
  ``config.seed``: the heads the frozen linear probe trains on these features) for
  :func:`linear_probe_budget`'s steps, each head's validation mean AUC recorded every
  ``eval_every`` steps; the head of best final validation mean AUC wins (the first on ties or
  when none is defined), folded back to an affine map of the standardised features
  (``whitening.fold``), so stage 2 starts from the probe's own solution with the head's
  parameterisation unchanged. Checkpoints and curves are kept under ``<workdir>/linear_probe``,
  so an interrupted stage resumes.
  """
  p = config.probe
  (tx, ty), (vx, vy) = train, validation
  tx = np.asarray(head.standardize_features(tx))
  vx = np.asarray(head.standardize_features(vx))
  white = None
  if p.whiten and whitening.applies(tx.shape[1]):
    white = whitening.whitening(tx)
    tx, vx = (whitening.project(a, *white) for a in (tx, vx))
  budget = linear_probe_budget(config, len(tx))
  folder = workdir / "linear_probe"
  name = f"{RUN_NAME}_linear_probe"
  curves = _HeadCurves(folder / f"{name}_curves.json", vx, vy, p.weight_decays)
  heads, _ = linear_probe.train_heads(
      tx, ty, workdir=folder, name=name, num_steps=budget.num_steps, batch_size=p.batch_size,
      learning_rate=p.learning_rate, weight_decays=p.weight_decays, seed=config.seed,
      log_every=config.train.log_every, hooks=[curves], hook_every=budget.eval_every)
  best, best_score, by_wd = None, -math.inf, {}
  for wd, trained in zip(p.weight_decays, heads):
    kernel, bias = sharding.to_host((trained.linear.kernel[...], trained.linear.bias[...]))
    value = metrics.mean_auc(vy, vx @ kernel + bias)
    by_wd[f"{wd:g}"] = _finite_or_none(value)
    print0(f"[{RUN_NAME}] linear probe, weight decay {wd:g}: validation mean AUC {value:.4f}")
    score = value if math.isfinite(value) else -math.inf  # undefined loses to any defined AUC
    if best is None or score > best_score:
      best_score = score
      projection = None
      if white is not None and head.whiten:  # the head keeps the whitening: W on whitened inputs
        mean, projection = white
        bias = np.asarray(bias, np.float64) - (mean.reshape(-1) @ projection) @ kernel
        kernel = np.pad(kernel, ((0, head.in_dim - len(kernel)), (0, 0)))  # padded inputs: 0
      elif white is not None:
        kernel, bias = whitening.fold(kernel, bias, *white)
      best = LinearProbeStage(np.asarray(kernel, np.float32), np.asarray(bias, np.float32),
                              float(wd), float(value), by_wd, curves.points, budget,
                              white is not None,
                              None if projection is None else projection.astype(np.float32))
  return best


def _save_start(workdir: epath.Path, head: LinearClassifier, stage: LinearProbeStage | None,
                config: ml_collections.ConfigDict) -> None:
  """Writes the stage-2 start head (``START_FILE``) and stage 1's record (process 0)."""
  if jax.process_index() != 0:
    return
  workdir.mkdir(parents=True, exist_ok=True)
  if stage is not None:
    (workdir / LINEAR_PROBE_RECORD).write_text(json.dumps(
        linear_probe_summary(config, stage), indent=2))
  arrays = {name: np.asarray(value) for name, value in (
      ("feature_mean", head.feature_mean[...]), ("feature_std", head.feature_std[...]),
      ("kernel", head.linear.kernel[...]), ("bias", head.linear.bias[...]))}
  if head.whiten:
    arrays["projection"] = np.asarray(head.feature_projection[...])
  with (workdir / START_FILE).open("wb") as f:
    np.savez(f, **arrays)


def _load_start(workdir: epath.Path, head: LinearClassifier) -> dict | None:
  """Sets ``head`` from ``START_FILE`` when an earlier run wrote it; returns stage 1's record
  (``{}`` when stage 1 was skipped), or None when there is no start file."""
  path = workdir / START_FILE
  if not path.exists():
    return None
  with path.open("rb") as f:
    arrays = dict(np.load(f))
  head.set_standardization(arrays["feature_mean"], arrays["feature_std"])
  head.linear.kernel[...] = jnp.asarray(arrays["kernel"])
  head.linear.bias[...] = jnp.asarray(arrays["bias"])
  if head.whiten and "projection" in arrays:
    head.set_projection(arrays["projection"])
  record = workdir / LINEAR_PROBE_RECORD
  return json.loads(record.read_text()) if record.exists() else {}


def linear_probe_summary(config: ml_collections.ConfigDict, stage: LinearProbeStage) -> dict:
  """Stage 1's entry of ``metrics.json``."""
  b = stage.budget
  return {"epochs": config.finetune.linear_probe_epochs, "num_steps": b.num_steps,
          "batch_size": b.batch_size, "steps_per_epoch": b.steps_per_epoch,
          "eval_every_steps": b.eval_every, "learning_rate": config.probe.learning_rate,
          "weight_decay": stage.weight_decay, "whitened": stage.whitened,
          "validation_mean_auc": _finite_or_none(stage.validation_mean_auc),
          "validation_mean_auc_by_weight_decay": stage.by_weight_decay,
          "validation_mean_auc_by_step": stage.curves}


def initial_classifier(config: ml_collections.ConfigDict, encoder: nnx.Module, num_classes: int,
                       train, validation, workdir: epath.Path
                       ) -> tuple[classifier.Classifier, dict]:
  """The stage-2 start: ``encoder`` and a head with the feature statistics of ``train`` under it,
  trained by stage 1 (:func:`train_linear_probe`) unless ``finetune.linear_probe_epochs`` is 0.

  An earlier run's start (``<workdir>/finetune_start.npz``) is reused as it is: no feature is
  computed again. Returns the model and stage 1's summary (``{}`` when skipped).
  """
  model = classifier.build_classifier(config, num_classes, encoder)
  record = _load_start(workdir, model.head)
  if record is not None:
    print0(f"[{RUN_NAME}] stage-2 start read from {workdir / START_FILE}")
    return model, record
  f = config.finetune
  kw = dict(image_size=config.data.image_size, batch_size=f.batch_size)
  train_features = classifier.pooled_features(encoder, train, **kw)
  mean, std = classifier.feature_statistics(train_features[0])
  model.head.set_standardization(mean, std)
  spread = np.median(std / np.maximum(np.abs(mean), 1e-12))
  print0(f"[{RUN_NAME}] feature statistics of {len(train):,} training images: median std/|mean| "
         f"{spread:.3g}")
  stage = None
  if f.linear_probe_epochs > 0:
    validation_features = classifier.pooled_features(encoder, validation, **kw)
    stage = train_linear_probe(config, model.head, train_features, validation_features, workdir)
    model.head.linear.kernel[...] = jnp.asarray(stage.kernel)
    model.head.linear.bias[...] = jnp.asarray(stage.bias)
    if stage.projection is not None:
      model.head.set_projection(stage.projection)
    print0(f"[{RUN_NAME}] stage 1 (linear probe): weight decay {stage.weight_decay:g}, "
           f"validation mean AUC {stage.validation_mean_auc:.4f}")
  _save_start(workdir, model.head, stage, config)
  return model, ({} if stage is None else linear_probe_summary(config, stage))


def plot_validation_curves(workdir: epath.Path, lp: dict, curve: dict[str, float | None],
                           budget: StepBudget, best_step: int | None) -> str:
  """``<workdir>/validation_curve.png``: validation mean AUC against epochs, stage 1 (one line
  per weight decay, the selected one solid) then stage 2 (its best step marked)."""
  import matplotlib.pyplot as plt  # plots set the non-interactive backend

  fig, ax = plt.subplots(figsize=(7.0, 3.6))
  offset = 0.0
  if lp:
    per_epoch = lp["steps_per_epoch"]
    for wd, points in lp["validation_mean_auc_by_step"].items():
      pts = [(int(s) / per_epoch, v) for s, v in points.items() if v is not None]
      selected = float(wd) == lp["weight_decay"]
      if pts:
        ax.plot(*zip(*sorted(pts)), lw=1.8 if selected else 0.9, ls="-" if selected else ":",
                color="tab:blue", label=f"stage 1: linear probe, wd {wd}"
                + (" (selected)" if selected else ""))
    offset = lp["epochs"]
    ax.axvline(offset, color="k", lw=0.6, ls="--")
  pts = sorted((offset + budget.epochs(int(s)), v) for s, v in curve.items() if v is not None)
  if pts:
    ax.plot(*zip(*pts), lw=1.8, marker="o", ms=2.5, color="tab:orange",
            label="stage 2: fine-tuning")
  if best_step is not None and curve.get(str(best_step)) is not None:
    ax.plot([offset + budget.epochs(best_step)], [curve[str(best_step)]], "*", ms=12,
            color="tab:red", label=f"selected (stage 2, step {best_step})")
  ax.set_xlabel("epoch (stage 1, then stage 2)")
  ax.set_ylabel("validation mean AUC")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  return plots.save_figure(fig, workdir / CURVE_PLOT)


def _finite_or_none(x: float) -> float | None:
  return x if math.isfinite(x) else None


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the evaluation of the network ``config`` names (``modes/network.py``) in ``workdir``."""
  return _run(network.resolve(config, workdir), workdir)


@workdir_lib.guarded
def _run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  start = time.time()
  workdir = epath.Path(workdir)
  f = config.finetune
  mesh = sharding.make_mesh()
  sharding.check_batch_size(f.batch_size, mesh, field="finetune.batch_size")
  train = datasets.split_source(config, f.split)
  if len(train) < f.batch_size:
    raise ValueError(f"config.finetune.split={f.split!r} has {len(train)} images, fewer than one "
                     f"batch (config.finetune.batch_size={f.batch_size}).")
  validation = datasets.split_source(config, config.data.val_split)
  test = datasets.split_source(config, config.data.test_split)
  class_names = datasets.class_names(config)
  budget = finetune_budget(config, len(train))

  encoder, origin = initial_encoder(config)
  workdir_lib.save_config(config, workdir)
  model, lp = initial_classifier(config, encoder, len(class_names), train, validation, workdir)
  tx, schedules = make_optimizer(config, budget)
  batches = pipeline.train_iterator(
      train, global_batch_size=f.batch_size, seed=config.seed,
      transform=pipeline.select_keys(["image", "labels"]), process_index=jax.process_index(),
      process_count=jax.process_count(), num_threads=config.data.num_threads)
  scorer = classifier.Scorer(image_size=config.data.image_size, batch_size=f.batch_size,
                             mesh=mesh)
  hook = selection.BestStateHook(workdir, RUN_NAME, validation_evaluator(scorer, validation),
                                 metric=SELECTION_METRIC, patience=f.patience)
  # The stage-2 start (stage 1's classifier) on test, only to report fine-tuning's gain over it;
  # selection reads validation alone.
  start_scores = scorer(nnx.clone(model), test)[0] if lp else None
  print0(f"[{RUN_NAME}] {config.model.encoder} ({models.count_params(model):,} parameters), "
         f"{', '.join(f'{k} {v}' for k, v in origin.items())}; {len(train):,} training images "
         f"({f.split}), batch {f.batch_size}, {budget.num_steps} steps "
         f"({budget.epochs(budget.num_steps):.3g} epochs, validation every {budget.eval_every}), "
         f"learning rates encoder "
         f"{f.encoder_learning_rate:g} / head {f.head_learning_rate:g}, on {jax.device_count()} "
         f"device(s)")

  rng = jax.random.key_data(jax.random.key(config.seed + 2))
  if not hook.done:  # the stage-2 start (stage 1's classifier) is selectable like later states
    graphdef, state = state_lib.create_train_state(model, tx, rng)
    try:
      hook(0, graphdef, sharding.replicate(state, mesh))
    except loop.StopTraining as stop:
      print0(f"[{RUN_NAME}] stopped at step 0: {stop.reason}")
    del state
  if hook.done:  # an earlier run of this workdir stopped early: nothing left to train
    print0(f"[{RUN_NAME}] stopped early before (best step {hook.record.best_step}); evaluating "
           f"its selected state")
    graphdef, state = state_lib.create_train_state(model, tx, rng)
    state = sharding.replicate(state, mesh)
  else:
    result = loop.run(name=RUN_NAME, workdir=workdir, model=model, loss_fn=make_loss_fn(config),
                      tx=tx, batches=batches, global_batch_size=f.batch_size,
                      config=loop_config(config, budget), rng=rng, mesh=mesh,
                      schedule=schedules["encoder"], hooks=[hook])
    graphdef, state = result.graphdef, result.state
  record = hook.record
  best = hook.restore(state)
  if best is None:
    raise ValueError(f"validation mean AUC was undefined at every evaluation (steps "
                     f"{[e['step'] for e in record.evaluations]}): no validation class has both "
                     f"label values, so no state can be selected; use a larger validation split.")

  scores, labels = scorer(state_lib.eval_model(graphdef, best), test)
  test_summary = summary.auc_summary(labels, scores, class_names, seed=config.seed)
  stage = None if start_scores is None else versus_linear_probe_stage(
      labels, scores, start_scores, class_names, seed=config.seed)
  curve = {str(e["step"]): _finite_or_none(e[SELECTION_METRIC]) for e in record.evaluations}
  plot = None
  if jax.process_index() == 0:
    plot = plot_validation_curves(workdir, lp, curve, budget, record.best_step)
  out = {
      "mode": RUN_NAME,
      **origin,
      "encoder": config.model.encoder,
      "split": f.split,
      "label_fraction": LABEL_FRACTIONS[f.split],
      "train_images": len(train),
      "best_step": record.best_step,
      "validation_mean_auc": record.best_value,
      "validation_mean_auc_by_step": curve,
      "stopped_early": record.stopped_early,
      "num_epochs": f.num_epochs if f.num_steps is None else None,
      "num_steps": budget.num_steps,
      "steps_per_epoch": budget.steps_per_epoch,
      "eval_every_steps": budget.eval_every,
      "warmup_steps": budget.warmup_steps,
      "patience": f.patience,
      "linear_probe": lp or None,
      "linear_probe_stage": stage,
      "validation_curve_png": plot,
      "optimizer": f.optimizer,
      "encoder_learning_rate": f.encoder_learning_rate,
      "head_learning_rate": f.head_learning_rate,
      "weight_decay": f.weight_decay,
      "batch_size": f.batch_size,
      "test": test_summary,
      "seconds": time.time() - start,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  path = summary.write_metrics(workdir, out, tensorboard=config.train.tensorboard)
  score_files.save_scores(workdir, labels, scores, class_names)
  gain = ""
  if stage is not None and stage["fine_tuned_minus_it_ci95"] is not None:
    low, high = stage["fine_tuned_minus_it_ci95"]
    gain = (f"\n[{RUN_NAME}] its linear-probe stage (the stage-2 start): test mean AUC "
            f"{stage['test_mean_auc']:.3f}; fine-tuning minus it "
            f"{stage['fine_tuned_minus_it']:+.3f} [{low:+.3f}, {high:+.3f}] (paired, test images)")
  print0(f"[{RUN_NAME}] {origin['init']} encoder, {f.split}: best validation mean AUC "
         f"{record.best_value:.3f} at step {record.best_step}\n"
         f"{summary.auc_table({'test': test_summary})}{gain}\n[{RUN_NAME}] metrics: {path}")
  return out


def versus_linear_probe_stage(labels: np.ndarray, scores: np.ndarray, start_scores: np.ndarray,
                              class_names: Sequence[str], *, seed: int) -> dict:
  """The linear-probe stage's test mean AUC with its bootstrap interval, and the fine-tuned
  classifier's minus it with a paired bootstrap interval over the same test images."""
  start = summary.auc_summary(labels, start_scores, class_names, seed=seed)
  diff, low, high = metrics.paired_mean_auc_difference(labels, scores, start_scores, seed=seed)
  interval = None if math.isnan(low) else [low, high]  # NaN: no class defined in a resample
  return {"test_mean_auc": start["mean_auc"], "test_mean_auc_ci95": start["mean_auc_ci95"],
          "fine_tuned_minus_it": _finite_or_none(diff), "fine_tuned_minus_it_ci95": interval}
