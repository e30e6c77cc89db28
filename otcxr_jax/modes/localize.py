"""Localisation: do the models' heatmaps point at the findings the dataset's boxes mark?

1. *Images*: every image of the evaluation split ``data.test_split`` with at least one box
   (``boxes``, ``box_labels``: the synthetic dataset's focal findings, NIH ChestX-ray14's
   ``BBox_List_2017.csv``), each (image, boxed class) pair one finding instance.
2. *Heatmaps*, the methods of ``localize.methods`` (definitions in
   ``evaluation/localization.py``), on the whole image resized to the model's input size
   (``augment.whole_image_view``, as every evaluation does):

   * ``'cam'``: the class activation map of the instance's class for the classifier a fine-tuning
     run selected (``localize.classifier_workdir``, read with ``classifier.load_classifier``):
     for its linear head on average-pooled ResNet features, Grad-CAM before its ReLU (why CAM is
     scored: ``evaluation/localization.py``);
   * ``'attention'`` and ``'transport'``: maps of the pretraining network of the run
     ``localize.checkpoint_dir`` names (``modes/network.py``: its ``config.json`` gives
     ``model`` and ``objective``; ``localize.init='pretrained'`` reads its latest checkpoint,
     ``'random'`` is its initialisation), all views unaugmented. ``'attention'``: with *identity views* (the
     image as view s and as view t), the CV-SIM attention each position receives
     (``localization.attention_received``). ``'transport'``: view s the image, view t each of
     ``localize.num_references`` *normal references* (the first images of ``data.train_split``
     without any finding), the entropic OT plan between the two views' tokens exactly as the
     pretraining objective solves it (``objective`` cost, centring, ε, iterations, and the
     location prior of two untransformed views), and each position's mean transport cost
     (``localization.position_transport_cost``), averaged over the references: high where the
     image has no counterpart in normal anatomy. Both maps are class-agnostic: one per image,
     scored against each of its boxed classes.

     (Identity views make a poor transport map: each token's cheapest match is itself, so the
     plan is the identity permutation and every position's plan is equally concentrated.)
3. *Scores* on the heatmap upsampled to ``data.image_size``: pointing game, IoU of the region
   ``localize.threshold_mode`` / ``localize.threshold`` marks, and chance (box area share), per
   class and averaged (``localization.summarise``).
4. ``<workdir>/metrics.json`` and ``<workdir>/localize_examples.png``: ``localize.num_examples``
   instances (classes in turn), the image with its boxes and each method's heatmap overlaid.

Heatmaps are computed on one device (the localisation sets are small: 984 boxes in NIH); every
process computes them and process 0 writes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from otcxr_jax import config_lib, models
from otcxr_jax.config_lib import require
from otcxr_jax.data import augment, datasets
from otcxr_jax.evaluation import classifier, localization
from otcxr_jax.reporting import plots, summary
from otcxr_jax.modes import network
from otcxr_jax.objectives import ot
from otcxr_jax.objectives import otcxr as otcxr_objective
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0

RUN_NAME = "localize"
FIGURE_FILE = "localize_examples.png"
PRETRAINING_METHODS = ("attention", "transport")
_SCORE_CHUNK = 64  # instances upsampled and scored at once (bounds memory at NIH's 224x224)

# images uint8 (B, H, W, C) -> {method: (B, h, w, K) heatmaps}, K = classes or 1 (class-agnostic)
HeatmapFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def dataset_has_boxes(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config.data``'s dataset stores ``boxes`` and ``box_labels`` (its builder's info;
  nothing is built or read)."""
  return {"boxes", "box_labels"} <= datasets.features(config)


@dataclasses.dataclass(frozen=True)
class BoxedImages:
  """The images of a split that have boxes, in split order.

  Attributes:
    images: ``(n, R, R, C)`` uint8 as stored.
    boxes: per image, ``(n_i, 4)`` ``(ymin, xmin, ymax, xmax)`` in [0, 1].
    box_labels: per image, ``(n_i,)`` class indices.
    image_ids: per image, its id.
  """

  images: np.ndarray
  boxes: list[np.ndarray]
  box_labels: list[np.ndarray]
  image_ids: list[str]


def validate(c: ml_collections.ConfigDict) -> None:
  """The ``localize`` fields, what each method needs, and the dataset's boxes."""
  l = c.localize
  methods = l.methods
  require(isinstance(methods, (tuple, list)) and len(methods) > 0 and
          len(set(methods)) == len(methods) and set(methods) <= set(localization.METHODS),
          "localize.methods", methods,
          f"a non-empty tuple of distinct methods of {localization.METHODS}")
  require("cam" not in methods or bool(l.classifier_workdir), "localize.classifier_workdir",
          l.classifier_workdir, "the workdir of a fine-tuning run (method 'cam')")
  require(l.init in config_lib.PROBE_INITS, "localize.init", l.init, f"one of {config_lib.PROBE_INITS}")
  require(isinstance(l.checkpoint_dir, str), "localize.checkpoint_dir", l.checkpoint_dir,
          "a directory path ('' for <workdir>/checkpoints/pretrain)")
  pretraining = [m for m in methods if m in PRETRAINING_METHODS]
  require(not pretraining or c.method == "otcxr", "method", c.method,
          f"'otcxr' for the pretraining-network maps {pretraining}")
  require("attention" not in methods or c.model.cvsim, "model.cvsim", c.model.cvsim,
          "True for method 'attention' (CV-SIM attention maps)")
  require(l.threshold_mode in localization.THRESHOLD_MODES, "localize.threshold_mode",
          l.threshold_mode, f"one of {localization.THRESHOLD_MODES}")
  require(isinstance(l.threshold, (int, float)) and 0.0 < l.threshold <= 1.0,
          "localize.threshold", l.threshold, "a number in (0, 1]")
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  require(is_int(l.batch_size) and l.batch_size >= 1, "localize.batch_size", l.batch_size,
          "an int >= 1")
  require(is_int(l.num_examples) and l.num_examples >= 0, "localize.num_examples",
          l.num_examples, "an int >= 0")
  require(is_int(l.num_references) and l.num_references >= 1, "localize.num_references",
          l.num_references, "an int >= 1")
  require(dataset_has_boxes(c), "data.name", c.data.name,
          "a dataset with boxes ('boxes' and 'box_labels'), such as 'nih_chest_xray14' or "
          "'synthetic_cxr'")


def images_with_boxes(source) -> BoxedImages:
  """Reads every example of ``source`` and keeps those with at least one box."""
  kept = []
  for i in range(len(source)):
    record = source[i]
    if len(record["box_labels"]):
      kept.append(record)
  if not kept:
    raise ValueError(f"the evaluation split has no image with a box ({len(source)} images read); "
                     f"set config.data.test_split to a split with boxes.")
  return BoxedImages(images=np.stack([np.asarray(r["image"]) for r in kept]),
                     boxes=[np.asarray(r["boxes"], np.float32).reshape(-1, 4) for r in kept],
                     box_labels=[np.asarray(r["box_labels"], np.int64).reshape(-1) for r in kept],
                     image_ids=[np.asarray(r["image_id"]).astype(str).item() for r in kept])


def cam_fn(loaded: classifier.LoadedClassifier) -> Callable[[np.ndarray], np.ndarray]:
  """``images uint8 (B, H, W, C) -> (B, h, w, K)`` class activation maps of every class, jitted.

  The images are viewed as the classifier's evaluation sees them (whole image resized to its
  ``data.image_size``).

  Raises:
    ValueError: the encoder is not a ResNet (a ViT pools its CLS token, not the dense map, so the
      closed form does not apply).
  """
  if not isinstance(loaded.encoder, models.ResNet):
    raise ValueError(f"CAM needs a classifier whose pooled features are the mean of its dense map "
                     f"(a ResNet); model.encoder={loaded.config.model.encoder!r} is not one.")
  size = loaded.config.data.image_size
  graphdef, state = nnx.split(classifier.Classifier(loaded.encoder, loaded.head))

  @jax.jit
  def fn(state, images):
    model = nnx.merge(graphdef, state, copy=True)
    dense = model.encoder(augment.whole_image_view(images, size)).dense
    return localization.class_activation_maps(dense, model.head.affine()[0])

  return lambda images: np.asarray(fn(state, images))


def normal_references(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
  """``(count, R, R, C)`` uint8: the first ``count`` images of ``data.train_split`` whose labels
  are all zero (no finding)."""
  source = datasets.split_source(config, config.data.train_split)
  found = []
  for i in range(len(source)):
    record = source[i]
    if not np.asarray(record["labels"]).any():
      found.append(np.asarray(record["image"]))
      if len(found) == count:
        return np.stack(found)
  raise ValueError(f"config.localize.num_references={count}, but config.data.train_split="
                   f"{config.data.train_split!r} has only {len(found)} images without a finding.")


def _untransformed_location_cost(grid: tuple[int, int]) -> jax.Array:
  """``(1, N, N)`` location prior of pretraining (``methods.otcxr.view_location_cost``) between
  two views that are both the whole, unrotated image."""
  whole = jnp.array([[0.0, 0.0, 1.0, 1.0]], jnp.float32)
  pos = augment.positions_in_source(whole, 0.0, grid).reshape(1, grid[0] * grid[1], 2)
  return otcxr_objective.location_cost(pos, pos, jnp.full((1,), 1.0 / max(grid), jnp.float32))


def pretraining_heatmap_fn(config: ml_collections.ConfigDict, model: models.OTCXRModel,
                           methods: tuple[str, ...], references: np.ndarray | None
                           ) -> HeatmapFn:
  """``images uint8 -> {'attention' | 'transport': (B, h, w, 1)}`` (module docstring), jitted.

  ``references``: ``(R, H, W, C)`` uint8 normal references, needed for ``'transport'``.
  """
  size, o = config.data.image_size, config.objective
  graphdef, state = nnx.split(model)

  def transport_cost(net: models.OTCXRModel, x: jax.Array, reference: jax.Array) -> jax.Array:
    out = net(x, jnp.broadcast_to(reference, x.shape))
    q_s, q_t = out.q_s, out.q_t
    # objective.center_positions is not applied: the reference side is one image repeated, whose
    # batch mean at each position is itself.
    if o.center_tokens:  # as otcxr_objective.otcxr_loss does
      q_s = q_s - jnp.mean(q_s, axis=1, keepdims=True)
      q_t = q_t - jnp.mean(q_t, axis=1, keepdims=True)
    offset = None
    if o.location_weight:
      offset = o.location_weight * jnp.broadcast_to(
          _untransformed_location_cost(out.grid), (x.shape[0], q_s.shape[1], q_t.shape[1]))
    result = ot.batched_transport(q_s, q_t, epsilon=o.epsilon, num_iters=o.num_iters,
                                  cost=o.cost, lse_mode=o.lse_mode, cost_offset=offset)
    feature_cost = ot.cost_matrix(q_s, q_t, kind=o.cost)
    return localization.position_transport_cost(result.plan, feature_cost, out.grid)

  @jax.jit
  def fn(state, images, references):
    net = nnx.merge(graphdef, state, copy=True)
    x = augment.whole_image_view(images, size)
    maps = {}
    if "attention" in methods:
      out = net(x, x, return_attention=True)
      maps["attention"] = localization.attention_received(out.attention_s, out.grid)[..., None]
    if "transport" in methods:
      per_reference = jax.lax.map(lambda r: transport_cost(net, x, r),
                                  augment.whole_image_view(references, size))
      maps["transport"] = jnp.mean(per_reference, axis=0)[..., None]
    return maps

  return lambda images: jax.tree.map(np.asarray, fn(state, images, references))


def batched(fn: HeatmapFn, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
  """``fn`` over ``images`` in batches of ``batch_size`` (the last one padded, so ``fn``
  compiles once); outputs concatenated along the batch."""
  outputs = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
    outputs.append(jax.tree.map(lambda x: x[:n], fn(batch)))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)


@dataclasses.dataclass(frozen=True)
class MethodResult:
  """One method's summary (JSON-ready), per-instance scores, and the upsampled heatmaps of the
  instances ``shown`` (for the figure), keyed by instance index."""

  summary: dict[str, Any]
  scores: localization.InstanceScores
  shown: dict[int, np.ndarray]


def score_method(maps: np.ndarray, instances: list[localization.Instance],
                 class_names: tuple[str, ...], *, size: int, mode: str, value: float,
                 shown: list[int]) -> MethodResult:
  """Scores ``(n_images, h, w, K)`` maps (``K = 1``: class-agnostic) on the instances."""
  hits, ious, chance, kept = [], [], [], {}
  for start in range(0, len(instances), _SCORE_CHUNK):
    chunk = instances[start:start + _SCORE_CHUNK]
    coarse = np.stack([maps[u.image, ..., u.label if maps.shape[-1] > 1 else 0] for u in chunk])
    fine = localization.upsample(coarse, size)
    s = localization.score_instances(fine, [u.truth for u in chunk], mode=mode, value=value)
    hits.append(s.hits)
    ious.append(s.ious)
    chance.append(s.chance)
    kept.update({i: fine[i - start] for i in shown if start <= i < start + len(chunk)})
  scores = localization.InstanceScores(np.concatenate(hits), np.concatenate(ious),
                                       np.concatenate(chance))
  result = localization.summarise(scores, [u.label for u in instances], class_names)
  return MethodResult(result, scores, kept)


def example_indices(instances: list[localization.Instance], count: int) -> list[int]:
  """Up to ``count`` instances, the classes in turn (first instance of each class, then the
  second, ...), in instance order."""
  by_class: dict[int, list[int]] = {}
  for i, u in enumerate(instances):
    by_class.setdefault(u.label, []).append(i)
  chosen, depth = [], 0
  while len(chosen) < min(count, len(instances)):
    for label in sorted(by_class):
      if depth < len(by_class[label]) and len(chosen) < count:
        chosen.append(by_class[label][depth])
    depth += 1
  return sorted(chosen)


def plot_examples(data: BoxedImages, instances: list[localization.Instance],
                  chosen: list[int], results: dict[str, MethodResult],
                  class_names: tuple[str, ...], path: epath.Path, *, size: int) -> str:
  """One row per chosen instance: the image with the class's boxes, then each method's heatmap
  overlaid (its maximum marked, pointing-game outcome and IoU in the title)."""
  rows = []
  for i in chosen:
    u = instances[i]
    image = np.asarray(augment.whole_image_view(data.images[u.image][None], size))[0, ..., 0]
    boxes = plots.box_outlines(data.boxes[u.image][data.box_labels[u.image] == u.label], size)
    row = [(image, f"{class_names[u.label]}\n{data.image_ids[u.image]}", boxes)]
    for method, r in results.items():
      verdict = "hit" if r.scores.hits[i] else "miss"
      row.append((image, f"{method}: {verdict}, IoU {r.scores.ious[i]:.2f}",
                  plots.both(plots.heatmap_overlay(r.shown[i]), boxes)))
    rows.append(row)
  return plots.image_rows(rows, path, title_size=7)


def _heatmap_sources(config: ml_collections.ConfigDict, workdir: epath.Path
                     ) -> list[tuple[tuple[str, ...], HeatmapFn, dict[str, Any]]]:
  """``[(methods, heatmap function, source description)]`` for ``localize.methods``."""
  l = config.localize
  methods = tuple(l.methods)
  sources = []
  if "cam" in methods:
    trained_on = workdir_lib.load_config(l.classifier_workdir).data.name
    if trained_on != config.data.name:
      raise ValueError(f"config.localize.classifier_workdir={l.classifier_workdir!r} holds a "
                       f"classifier of {trained_on!r}, not of config.data.name="
                       f"{config.data.name!r}: its classes are not the boxes' classes.")
    loaded = classifier.load_classifier(l.classifier_workdir)
    cam = cam_fn(loaded)
    sources.append((("cam",), lambda images: {"cam": cam(images)}, {
        "classifier_workdir": str(ckpt_lib.absolute(l.classifier_workdir)),
        "init": loaded.config.finetune.init, "split": loaded.config.finetune.split}))
  wanted = tuple(m for m in methods if m in PRETRAINING_METHODS)
  if wanted:
    model, origin = network.pretraining_model(config, workdir)
    references = None
    if "transport" in wanted:
      references = normal_references(config, l.num_references)
      origin = {**origin, "num_references": l.num_references}
    sources.append((wanted, pretraining_heatmap_fn(config, model, wanted, references), origin))
  return sources


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the evaluation of the network ``config`` names (``modes/network.py``) in ``workdir``."""
  return _run(network.resolve(config, workdir), workdir)


@workdir_lib.guarded
def _run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  start = time.time()
  workdir = epath.Path(workdir)
  l = config.localize
  if not dataset_has_boxes(config):
    raise ValueError(f"config.data.name={config.data.name!r} has no boxes; localisation needs a "
                     f"dataset with 'boxes' and 'box_labels' such as 'nih_chest_xray14' or "
                     f"'synthetic_cxr'.")
  size = config.data.image_size
  class_names = datasets.class_names(config)
  data = images_with_boxes(datasets.split_source(config, config.data.test_split))
  instances = localization.instances(data.boxes, data.box_labels, size)
  chosen = example_indices(instances, l.num_examples)
  print0(f"[{RUN_NAME}] {len(data.images)} images of {config.data.test_split!r} with boxes, "
         f"{len(instances)} finding instances; methods {', '.join(l.methods)}")

  results, origins = {}, {}
  for methods, fn, origin in _heatmap_sources(config, workdir):
    maps = batched(fn, data.images, l.batch_size)
    for method in methods:
      results[method] = score_method(maps[method], instances, class_names, size=size,
                                     mode=l.threshold_mode, value=l.threshold, shown=chosen)
      origins[method] = {**origin, "grid": list(maps[method].shape[1:3])}
  results = {m: results[m] for m in l.methods}

  figure = None
  if jax.process_index() == 0 and chosen:
    figure = plot_examples(data, instances, chosen, results, class_names, workdir / FIGURE_FILE,
                           size=size)
  out = {
      "mode": RUN_NAME,
      "dataset": datasets.dataset_name(config),
      "split": config.data.test_split,
      "image_size": size,
      "threshold_mode": l.threshold_mode,
      "threshold": float(l.threshold),
      "num_images": len(data.images),
      "num_boxes": int(sum(len(b) for b in data.boxes)),
      "num_instances": len(instances),
      "methods": {m: {"source": origins[m], **r.summary} for m, r in results.items()},
      "figure": figure,
      "seconds": time.time() - start,
      "devices": f"1 x {jax.devices()[0].device_kind}",
  }
  path = summary.write_metrics(workdir, out, tensorboard=config.train.tensorboard)
  print0(f"[{RUN_NAME}]\n{table(out)}\n[{RUN_NAME}] metrics: {path}")
  return out


def table(result: dict[str, Any]) -> str:
  """Markdown table of a ``metrics.json`` of this mode: one row per method."""
  rows = [[m, f"{r['pointing_game']:.3f}", f"{r['iou']:.3f}", f"{r['chance']:.3f}",
           f"{r['pointing_game_all']:.3f}", f"{r['iou_all']:.3f}"]
          for m, r in result["methods"].items()]
  mode = "fraction of max" if result["threshold_mode"] == "fraction_of_max" else "top fraction"
  return summary.markdown_table(
      ["method", "pointing game", f"IoU ({mode} {result['threshold']:g})", "chance",
       "pointing game (all instances)", "IoU (all instances)"], rows)
