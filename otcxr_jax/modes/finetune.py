"""Fine-tuning: the whole network trained on a label fraction, selected on validation, tested once.

1. *Start.* ``config.finetune.init='pretrained'``: the encoder variables (parameters and BatchNorm
   statistics) of the latest checkpoint in ``finetune.checkpoint_dir``, which may be any run's
   whose model has an ``encoder``: a pretraining run (``<workdir>/checkpoints/pretrain``) or a
   fine-tuning run (``<workdir>/checkpoints/finetune_best``, its selected state); ``'random'``:
   the encoder pretraining starts from. The head is a new
   :class:`~otcxr_jax.models.LinearClassifier` on the pooled features
   (``evaluation/classifier.py``).
2. *Training* on ``finetune.split``: ``'train_1pct'``, ``'train_10pct'`` or ``'train'``, the nested
   patient-level label fractions of the training split, through the shared loop
   (``training/loop.run``). Each image gives one on-device view, a random resized crop of area
   fraction ``finetune.crop_scale`` rotated by ``U(-finetune.rotation_deg, finetune.rotation_deg)``
   (``config_lib.finetune_augment_config``); the loss is the binary cross-entropy of the sigmoid
   logits averaged over images and classes. The optimiser ``finetune.optimizer`` updates the
   encoder and the head with their own peak learning rates (``optim.per_submodule``), each with
   linear warm-up over ``finetune.warmup_steps`` and cosine decay to 0 at ``finetune.num_steps``,
   and decoupled weight decay ``finetune.weight_decay`` on weight matrices.
3. *Selection* on validation only: every ``finetune.eval_every`` steps the validation mean AUC is
   computed and the best state kept in ``<workdir>/checkpoints/finetune_best``
   (``training/selection.BestStateHook``); ``finetune.patience`` evaluations without improvement
   stop the run (0: never).
4. *Test*: the best state scores the test split once; ``<workdir>/metrics.json`` holds the
   per-class and mean AUC with bootstrap 95% intervals, the label fraction, the best step and the
   encoder's origin; ``<workdir>/test_scores.npz`` the test scores (``evaluation/score_files.py``).

Evaluation views are whole images resized to ``data.image_size``. Batch size and number of steps
come from ``config.finetune``; the loop's other settings (``log_every``, ``checkpoint_every``,
``keep_checkpoints``, ``tensorboard``, ``compute_dtype``, ``on_nonfinite``) from ``config.train``.
The same command run again resumes an interrupted run; for a finished one it reloads the selected
state and evaluates test again (the same numbers). A rerun with another config is refused before
anything is written (``training/workdir.py``), and so is a workdir holding another mode's run
(its ``config.json`` is what the classifier is rebuilt from). The selected classifier is loaded
with ``evaluation.classifier.load_classifier(workdir)``.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from etils import epath
from flax import nnx

from otcxr_jax import config_lib, models
from otcxr_jax.data import augment, datasets, pipeline
from otcxr_jax.evaluation import checkpoints, classifier, metrics, score_files, summary
from otcxr_jax.modes import pretrain
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import loop, optim, selection, sharding
from otcxr_jax.training import state as state_lib
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0

RUN_NAME = classifier.RUN_NAME
LABEL_FRACTIONS = {"train_1pct": 0.01, "train_10pct": 0.1, "train": 1.0}
SELECTION_METRIC = "mean_auc"


def initial_encoder(config: ml_collections.ConfigDict) -> tuple[nnx.Module, dict]:
  """The encoder ``config.finetune.init`` selects, and a description of where it comes from."""
  f = config.finetune
  if f.init == "random":
    return pretrain.build_encoder(config, nnx.Rngs(config.seed)), {"init": "random"}
  encoder, step = checkpoints.load_encoder(config, f.checkpoint_dir,
                                           source="config finetune.checkpoint_dir")
  return encoder, {"init": "pretrained",
                   "checkpoint_dir": str(ckpt_lib.absolute(f.checkpoint_dir)),
                   "checkpoint_step": step}


def make_loss_fn(config: ml_collections.ConfigDict) -> state_lib.LossFn:
  """``loss_fn(model, batch, rng)``: one augmented view per image, mean binary cross-entropy."""
  aug = config_lib.finetune_augment_config(config)

  def loss_fn(model: classifier.Classifier, batch, rng):
    images = batch["image"].astype(jnp.float32) / 255.0
    logits = model(augment.augment(rng, images, aug).image)
    loss = optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean()
    return loss, {}

  return loss_fn


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
  """``(tx, {'encoder': schedule, 'head': schedule})``: one optimiser per submodule."""
  f = config.finetune
  schedules = {
      part: optim.make_schedule(peak=peak, total_steps=f.num_steps, warmup_steps=f.warmup_steps)
      for part, peak in (("encoder", f.encoder_learning_rate), ("head", f.head_learning_rate))}
  tx = optim.per_submodule({
      part: optim.make_optimizer(f.optimizer, schedule=schedule, weight_decay=f.weight_decay)
      for part, schedule in schedules.items()})
  return tx, schedules


def loop_config(config: ml_collections.ConfigDict) -> loop.LoopConfig:
  t, f = config.train, config.finetune
  return loop.LoopConfig(num_steps=f.num_steps, log_every=t.log_every,
                         checkpoint_every=t.checkpoint_every, max_to_keep=t.keep_checkpoints,
                         tensorboard=t.tensorboard, hook_every=f.eval_every,
                         on_nonfinite=t.on_nonfinite)


def validation_evaluator(scorer: classifier.Scorer, source
                         ) -> Callable[[nnx.Module], dict[str, float]]:
  """``evaluate(model) -> {'mean_auc': ...}`` on ``source`` (the selection hook's evaluator)."""

  def evaluate(model: nnx.Module) -> dict[str, float]:
    scores, labels = scorer(model, source)
    return {SELECTION_METRIC: metrics.mean_auc(labels, scores)}

  return evaluate


def _finite_or_none(x: float) -> float | None:
  return x if math.isfinite(x) else None


@workdir_lib.guarded
def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
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

  encoder, origin = initial_encoder(config)
  model = classifier.build_classifier(config, len(class_names), encoder)
  workdir_lib.save_config(config, workdir)
  tx, schedules = make_optimizer(config)
  batches = pipeline.train_iterator(
      train, global_batch_size=f.batch_size, seed=config.seed,
      transform=pipeline.select_keys(["image", "labels"]), process_index=jax.process_index(),
      process_count=jax.process_count(), num_threads=config.data.num_threads)
  scorer = classifier.Scorer(image_size=config.data.image_size, batch_size=f.batch_size,
                             mesh=mesh)
  hook = selection.BestStateHook(workdir, RUN_NAME, validation_evaluator(scorer, validation),
                                 metric=SELECTION_METRIC, patience=f.patience)
  print0(f"[{RUN_NAME}] {config.model.encoder} ({models.count_params(model):,} parameters), "
         f"{', '.join(f'{k} {v}' for k, v in origin.items())}; {len(train):,} training images "
         f"({f.split}), batch {f.batch_size}, {f.num_steps} steps, learning rates encoder "
         f"{f.encoder_learning_rate:g} / head {f.head_learning_rate:g}, on {jax.device_count()} "
         f"device(s)")

  rng = jax.random.key_data(jax.random.key(config.seed + 2))
  if hook.done:  # an earlier run of this workdir stopped early: nothing left to train
    print0(f"[{RUN_NAME}] stopped early before (best step {hook.record.best_step}); evaluating "
           f"its selected state")
    graphdef, state = state_lib.create_train_state(model, tx, rng)
    state = sharding.replicate(state, mesh)
  else:
    result = loop.run(name=RUN_NAME, workdir=workdir, model=model, loss_fn=make_loss_fn(config),
                      tx=tx, batches=batches, global_batch_size=f.batch_size,
                      config=loop_config(config), rng=rng, mesh=mesh,
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
  out = {
      "mode": RUN_NAME,
      **origin,
      "encoder": config.model.encoder,
      "split": f.split,
      "label_fraction": LABEL_FRACTIONS[f.split],
      "train_images": len(train),
      "best_step": record.best_step,
      "validation_mean_auc": record.best_value,
      "validation_mean_auc_by_step": {str(e["step"]): _finite_or_none(e[SELECTION_METRIC])
                                      for e in record.evaluations},
      "stopped_early": record.stopped_early,
      "optimizer": f.optimizer,
      "encoder_learning_rate": f.encoder_learning_rate,
      "head_learning_rate": f.head_learning_rate,
      "weight_decay": f.weight_decay,
      "batch_size": f.batch_size,
      "test": test_summary,
      "seconds": time.time() - start,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  path = summary.write_metrics(workdir, out)
  score_files.save_scores(workdir, labels, scores, class_names)
  print0(f"[{RUN_NAME}] {origin['init']} encoder, {f.split}: best validation mean AUC "
         f"{record.best_value:.3f} at step {record.best_step}\n"
         f"{summary.auc_table({'test': test_summary})}\n[{RUN_NAME}] metrics: {path}")
  return out
