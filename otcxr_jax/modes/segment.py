"""Segmentation transfer (the paper's SIIM-ACR pneumothorax Dice): encoder + U-Net decoder.

1. the encoder ``config.probe.init`` selects (:func:`network.encoder`: that of the latest
   checkpoint of the run ``config.probe.checkpoint_dir`` names, or the same network at its
   initialisation) and a
   :class:`~otcxr_jax.models.decoder.UNetDecoder` over its multi-scale maps;
2. training of the whole network on ``config.segment.split`` through the shared train loop, with
   the loss ``BCE + dice_weight · soft Dice`` (``objectives/segmentation.py``), AdamW with separate
   learning rates for the encoder and the decoder (each warmed up linearly, then cosine-decayed),
   and augmentation that moves image and mask together (:func:`augment_pair`);
3. every ``config.segment.eval_every`` steps the validation Dice (``selection_metric``: all images
   or positive images) decides which state is kept (:class:`selection.BestStateHook`), with early
   stopping after ``patience`` evaluations without improvement;
4. the test split, evaluated once with the best state: ``<workdir>/metrics.json`` (mean Dice over
   all images and over the images with a non-empty mask, :func:`metrics.dice_summary`, a
   prediction being ``σ(logit) > threshold``), ``<workdir>/test_predictions.npz`` (the predicted
   masks, per-image Dice and image ids) and ``<workdir>/segment_examples.png`` (overlays).

Dice is measured at the model's resolution ``data.image_size``: images and reference masks are
resized to it (:func:`augment.at_size`) when the stored size differs, the masks then binarised at
0.5.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.config_lib import positive, require
from otcxr_jax.data import augment, datasets, pipeline
from otcxr_jax.evaluation import features, metrics
from otcxr_jax.models import decoder as decoder_lib
from otcxr_jax.models import factory
from otcxr_jax.modes import network
from otcxr_jax.reporting import plots, summary
from otcxr_jax.objectives import segmentation as seg_loss
from otcxr_jax.training import loop, optim, selection
from otcxr_jax.training import sharding as shard_lib
from otcxr_jax.training import state as state_lib
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0

RUN_NAME = "segment"
SELECTION_METRICS = ("dice_all", "dice_positive")
NUM_EXAMPLES_PLOTTED = 6
PREDICTIONS_FILE = "test_predictions.npz"
EXAMPLES_FILE = "segment_examples.png"


def dataset_has_masks(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config.data``'s dataset stores a ``mask`` feature (its builder's info; nothing is
  built or read)."""
  return "mask" in datasets.features(config)


def require_masks(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError, naming the dataset, when it has no segmentation masks."""
  if not dataset_has_masks(config):
    raise ValueError(
        f"config.data.name={config.data.name!r}: the dataset has no segmentation masks; "
        f"segmentation needs a dataset with a 'mask' feature such as 'siim_acr_pneumothorax' or "
        f"'synthetic_cxr'.")


def decoder_strides(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The decoder levels' strides for the config's encoder, deepest first (one per entry of
  ``segment.decoder_channels``); from an abstract encoder (nothing allocated, no JAX backend)."""
  encoder = nnx.eval_shape(lambda: factory.build_encoder(config, nnx.Rngs(0)))
  return decoder_lib.decoder_strides(encoder.stage_strides)


def validate(c: ml_collections.ConfigDict) -> None:
  """The ``segment`` fields, the decoder's fit to the encoder, and the dataset's masks."""
  s = c.segment
  require(isinstance(s.split, str) and bool(s.split), "segment.split", s.split, "a split name")
  positive(c, ["segment.batch_size", "segment.num_steps", "segment.encoder_learning_rate",
               "segment.decoder_learning_rate", "segment.eval_every"])
  for field in ("warmup_steps", "patience"):
    require(isinstance(s[field], int) and not isinstance(s[field], bool) and s[field] >= 0,
            f"segment.{field}", s[field], "an int >= 0")
  for field in ("weight_decay", "dice_weight"):
    require(s[field] >= 0, f"segment.{field}", s[field], ">= 0")
  require(0.0 < s.threshold < 1.0, "segment.threshold", s.threshold, "a probability in (0, 1)")
  require(s.eval_every <= s.num_steps, "segment.eval_every", s.eval_every,
          f"at most segment.num_steps={s.num_steps} (the best state is chosen on validation)")
  require(s.selection_metric in SELECTION_METRICS, "segment.selection_metric",
          s.selection_metric, f"one of {SELECTION_METRICS}")
  strides = decoder_strides(c)
  channels = s.decoder_channels
  require(isinstance(channels, (tuple, list)) and len(channels) == len(strides) and
          all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in channels),
          "segment.decoder_channels", channels,
          f"{len(strides)} positive ints, one per decoder level (strides {strides}, deepest "
          f"first) of model.encoder={c.model.encoder!r} with these model fields")
  try:
    augment_config(c)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.segment: {e}") from None
  require(dataset_has_masks(c), "data.name", c.data.name,
          "a dataset with segmentation masks (a 'mask' feature), such as "
          "'siim_acr_pneumothorax' or 'synthetic_cxr'")


def augment_config(config: ml_collections.ConfigDict) -> augment.AugmentConfig:
  """The training augmentation: a mild random-resized crop (``segment.crop_scale``, aspect ratio
  in [3/4, 4/3]) rotated by up to ``segment.rotation_deg``, then brightness and contrast jitter;
  no gamma, blur, noise or flip (the mask must stay where the finding is)."""
  s = config.segment
  return augment.AugmentConfig(
      out_size=config.data.image_size, crop_scale=tuple(s.crop_scale),
      rotation_deg=s.rotation_deg, brightness=s.brightness, contrast=s.contrast,
      gamma=(1.0, 1.0), blur_prob=0.0, noise_prob=0.0, hflip_prob=0.0)


def augment_pair(key: jax.Array, images: jax.Array, masks: jax.Array,
                 cfg: augment.AugmentConfig) -> tuple[jax.Array, jax.Array]:
  """Augmented views of ``images`` and the same geometric transform of ``masks``.

  The image views come from :func:`augment.augment`; each mask is resampled by
  :func:`augment.affine_crop` with that view's crop box, angle and flip (the photometric part does
  not apply to masks) and binarised at 0.5.

  Args:
    key: one PRNG key, or one per example (see :func:`augment.example_keys`).
    images: ``(B, H, W, C)`` floating images in [0, 1].
    masks: ``(B, H, W, 1)`` masks in [0, 1].
    cfg: the augmentation.

  Returns:
    ``(B, S, S, C)`` views and ``(B, S, S, 1)`` float32 masks in {0, 1}, ``S = cfg.out_size``.
  """
  if masks.shape[:3] != images.shape[:3]:
    raise ValueError(f"masks {masks.shape} and images {images.shape} must share (B, H, W)")
  view = augment.augment(key, images, cfg)
  crop = functools.partial(augment.affine_crop, out_size=cfg.out_size)
  moved = jax.vmap(crop)(masks.astype(jnp.float32), view.box, view.angle, view.flip)
  return view.image, (moved >= 0.5).astype(jnp.float32)


def build_model(config: ml_collections.ConfigDict,
                encoder: nnx.Module) -> decoder_lib.SegmentationModel:
  return decoder_lib.build_segmentation_model(
      encoder, tuple(config.segment.decoder_channels), dtype=factory.compute_dtype(config),
      rngs=nnx.Rngs(config.seed + 2))


def _group_labels(params: Any) -> Any:
  """'encoder' or 'decoder' for every leaf of a segmentation model's parameter state."""
  return jax.tree_util.tree_map_with_path(lambda path, _: str(path[0].key), params)


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW per parameter group (encoder, decoder), each with its own peak learning rate.

  Both follow a linear warm-up over ``segment.warmup_steps`` and a cosine decay to 0 at
  ``segment.num_steps``; the learning rates are absolute (not scaled by the batch size). Returns
  the transformation and the decoder's schedule (what the loop logs as ``learning_rate``).
  """
  s = config.segment
  schedules = {group: optim.make_schedule(peak=peak, total_steps=s.num_steps,
                                          warmup_steps=s.warmup_steps)
               for group, peak in (("encoder", s.encoder_learning_rate),
                                   ("decoder", s.decoder_learning_rate))}
  transforms = {group: optim.make_optimizer("adamw", schedule=schedule,
                                            weight_decay=s.weight_decay)
                for group, schedule in schedules.items()}
  return optax.multi_transform(transforms, _group_labels), schedules["decoder"]


def make_loss_fn(config: ml_collections.ConfigDict):
  """``loss_fn(model, batch, rng)``: joint augmentation on device, BCE + weighted soft Dice."""
  aug = augment_config(config)
  dice_weight = float(config.segment.dice_weight)

  def loss_fn(model: decoder_lib.SegmentationModel, batch, rng):
    images = batch["image"].astype(jnp.float32) / 255.0
    images, masks = augment_pair(rng, images, batch["mask"], aug)
    return seg_loss.segmentation_loss(model(images), masks, dice_weight=dice_weight)

  return loss_fn


def _predict(graphdef, state, images, masks, *, size: int, threshold: float):
  """Binary predicted and reference masks ``(B, size, size)`` of a uint8 image/mask batch."""
  model = nnx.merge(graphdef, state, copy=True)
  logits = model(augment.at_size(images / 255.0, size))
  truth = augment.at_size(masks, size) > 0.5
  return jax.nn.sigmoid(logits[..., 0]) > threshold, truth[..., 0]


class Predictor:
  """Predicted masks of whole splits, by models in evaluation mode that share one structure.

  The forward pass is jitted once, for the graph of the first model it sees (a run's models, the
  periodic validation ones and the selected one, differ only in their arrays). Batches of
  ``segment.batch_size`` are sharded over ``mesh``; a prediction is ``σ(logit) > threshold``.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    self._batch_size = config.segment.batch_size
    self._size = config.data.image_size
    self._threshold = float(config.segment.threshold)
    self._mesh = mesh
    self._fn = None

  def __call__(self, model: nnx.Module, source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(predicted, reference, image_ids)`` of every example of ``source``, in order: bool masks
    ``(N, S, S)`` at ``S = data.image_size`` and string ids ``(N,)``."""
    graphdef, state = nnx.split(model)
    if self._fn is None:
      self._fn = jax.jit(functools.partial(_predict, graphdef, size=self._size,
                                           threshold=self._threshold))
    state = shard_lib.replicate(state, self._mesh)
    (predicted, reference), fields = features.map_split(
        lambda batch: self._fn(state, batch["image"], batch["mask"]), source,
        batch_size=self._batch_size, keys=("image", "mask"), host_keys=("image_id",),
        mesh=self._mesh, field="segment.batch_size")
    return predicted, reference, fields["image_id"].astype(str)


def _num(x: float) -> float | None:
  return None if np.isnan(x) else float(x)


def dice_scores(predicted: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
  """JSON-ready :func:`metrics.dice_summary` of binary masks (``null`` where undefined)."""
  s = metrics.dice_summary(predicted, reference, threshold=0.5)
  return {"dice_all": _num(s.mean_all), "dice_positive": _num(s.mean_positive),
          "num_images": s.num_images, "num_positive": s.num_positive}


def plot_examples(source, indices: list[int], predicted: np.ndarray, reference: np.ndarray,
                  dice: np.ndarray, path: epath.Path, *, image_size: int) -> str:
  """Rows of (image, reference mask, predicted mask) overlays of the test examples ``indices``."""
  rows = []
  for i in indices:
    image = np.asarray(augment.at_size(source[i]["image"][None] / 255.0, image_size))[0, ..., 0]
    rows.append([(image, "image", None),
                 (image, "reference mask", plots.mask_overlay(reference[i])),
                 (image, f"predicted (Dice {dice[i]:.2f})", plots.mask_overlay(predicted[i]))])
  return plots.image_rows(rows, path, title_size=8)


def _example_indices(reference: np.ndarray, count: int) -> list[int]:
  """Up to ``count`` examples: positives first (at most ``count - 2``), then negatives."""
  positive = np.flatnonzero(reference.reshape(len(reference), -1).any(axis=1))
  negative = np.flatnonzero(~reference.reshape(len(reference), -1).any(axis=1))
  chosen = list(positive[:max(count - 2, 1)])
  chosen += list(negative[:count - len(chosen)])
  return sorted(int(i) for i in chosen)


def loop_config(config: ml_collections.ConfigDict) -> loop.LoopConfig:
  t, s = config.train, config.segment
  return loop.LoopConfig(num_steps=s.num_steps, log_every=t.log_every,
                         checkpoint_every=t.checkpoint_every, max_to_keep=t.keep_checkpoints,
                         tensorboard=t.tensorboard, hook_every=s.eval_every,
                         on_nonfinite=t.on_nonfinite)


def _train(config, workdir: epath.Path, model, hook: selection.BestStateHook, mesh, name: str):
  """Trains through the shared loop (unless an earlier run of ``workdir`` stopped early) and
  returns ``(graphdef, best state, steps trained)``."""
  s = config.segment
  tx, schedule = make_optimizer(config)
  rng = jax.random.key_data(jax.random.key(config.seed + 3))
  if hook.done:  # an earlier run of this workdir stopped early: nothing left to train
    graphdef, state = state_lib.create_train_state(model, tx, rng)
    state = shard_lib.replicate(state, mesh)
    steps = hook.record.evaluations[-1]["step"]  # it stopped right after this evaluation
    print0(f"[{name}] stopped early at step {steps} before (best step "
           f"{hook.record.best_step}); evaluating only")
  else:
    source = datasets.split_source(config, s.split)
    batches = pipeline.train_iterator(
        source, global_batch_size=s.batch_size, seed=config.seed,
        transform=pipeline.select_keys(["image", "mask"]), process_index=jax.process_index(),
        process_count=jax.process_count(), num_threads=config.data.num_threads)
    print0(f"[{name}] {len(source):,} training images ({s.split}), batch {s.batch_size}, "
           f"{s.num_steps} steps, validation every {s.eval_every}")
    result = loop.run(name=name, workdir=workdir, model=model, loss_fn=make_loss_fn(config),
                      tx=tx, batches=batches, global_batch_size=s.batch_size,
                      config=loop_config(config), rng=rng, mesh=mesh, schedule=schedule,
                      hooks=[hook])
    graphdef, state, steps = result.graphdef, result.state, int(result.state.step)
  best = hook.restore(state)
  if best is None:
    raise RuntimeError(f"[{name}] no validation evaluation selected a state: validation "
                       f"{s.selection_metric} was never finite in {hook.record.evaluations}.")
  return graphdef, best, steps


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the evaluation of the network ``config`` names (``modes/network.py``) in ``workdir``."""
  return _run(network.resolve(config, workdir), workdir)


@workdir_lib.guarded
def _run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  start = time.time()
  workdir = epath.Path(workdir)
  s = config.segment
  require_masks(config)
  mesh = shard_lib.make_mesh()
  shard_lib.check_batch_size(s.batch_size, mesh, field="segment.batch_size")
  encoder, origin = network.encoder(config, workdir)
  model = build_model(config, encoder)
  name = f"{RUN_NAME}_{origin['init']}"
  print0(f"[{name}] encoder {config.model.encoder}: " +
         ", ".join(f"{k} {v}" for k, v in origin.items()) +
         f"; decoder levels at strides {model.decoder.strides}")

  val_source = datasets.split_source(config, config.data.val_split)
  if s.selection_metric == "dice_positive":
    masks = (np.asarray(val_source[i]["mask"]).any() for i in range(len(val_source)))
    if not any(masks):
      raise ValueError(f"config.segment.selection_metric='dice_positive', but the validation "
                       f"split {config.data.val_split!r} has no image with a non-empty mask.")

  predict = Predictor(config, mesh)

  def evaluate(m: nnx.Module) -> dict[str, float]:
    predicted, reference, _ = predict(m, val_source)
    scores = dice_scores(predicted, reference)
    return {k: float("nan") if v is None else float(v) for k, v in scores.items()}

  hook = selection.BestStateHook(workdir, name, evaluate, metric=s.selection_metric,
                                 patience=s.patience)
  workdir_lib.save_config(config, workdir)  # before the first checkpoint
  graphdef, best, steps = _train(config, workdir, model, hook, mesh, name)

  test_source = datasets.split_source(config, config.data.test_split)
  predicted, reference, ids = predict(state_lib.eval_model(graphdef, best), test_source)
  test = dice_scores(predicted, reference)
  per_image = metrics.dice(predicted, reference, threshold=0.5)
  examples = _example_indices(reference, NUM_EXAMPLES_PLOTTED)
  figure = None
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / PREDICTIONS_FILE).open("wb") as f:
      np.savez_compressed(f, pred_mask=predicted, dice=per_image, image_id=ids)
    figure = plot_examples(test_source, examples, predicted, reference, per_image,
                           workdir / EXAMPLES_FILE, image_size=config.data.image_size)
  best_eval = next(e for e in hook.record.evaluations if e["step"] == hook.record.best_step)
  result = {
      "mode": RUN_NAME,
      **origin,
      "encoder": config.model.encoder,
      "dataset": datasets.dataset_name(config),
      "image_size": config.data.image_size,
      "threshold": float(s.threshold),
      "selection_metric": s.selection_metric,
      "best_step": hook.record.best_step,
      "steps_trained": steps,
      "stopped_early": hook.record.stopped_early,
      "validation": {k: _num(v) if k.startswith("dice") else int(v)
                     for k, v in best_eval.items() if k != "step"},
      "test": test,
      "predictions": PREDICTIONS_FILE,
      "examples_figure": figure,
      "seconds": time.time() - start,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  path = summary.write_metrics(workdir, result, tensorboard=config.train.tensorboard)
  fmt = lambda v: "undefined" if v is None else f"{v:.3f}"
  print0(f"[{name}] best step {hook.record.best_step} (validation {s.selection_metric} "
         f"{fmt(result['validation'][s.selection_metric])}); test Dice all images "
         f"{fmt(test['dice_all'])} ({test['num_images']}), positive images "
         f"{fmt(test['dice_positive'])} ({test['num_positive']})\n[{name}] metrics: {path}",
         flush=True)
  return result
