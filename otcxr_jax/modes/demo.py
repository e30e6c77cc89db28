"""The demo: pretrain OTCXR on synthetic chest X-rays and compare it with random init and pixels.

1. builds ``synthetic_cxr`` if absent (no download);
2. pretrains OTCXR (resumable from ``<workdir>``);
3. extracts frozen features (``probe.readout``) of the pretrained encoder and the floors: the same encoder at
   its random initialisation (with BatchNorm: statistics as initialised, and re-estimated on
   the training images), and raw downsampled pixels;
4. trains linear probes (weight decay chosen on validation) on the labels of the training split or
   of ``probe.train_examples`` of its images, evaluates test once;
5. writes ``<workdir>/report.md``, ``metrics.json`` and PNG plots, and the same numbers and
   plots to TensorBoard (``<workdir>/tensorboard/demo``).
"""

from __future__ import annotations

import json
import time

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from otcxr_jax import config_lib, methods
from otcxr_jax.data import datasets
from otcxr_jax.evaluation import diagnostics, features, linear_probe, metrics
from otcxr_jax.modes import pretrain
from otcxr_jax.reporting import demo_report, visualize
from otcxr_jax.training import summaries
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0
from otcxr_jax.training.progress import format_duration


def probe_features(config: ml_collections.ConfigDict, fns: dict, sources) -> dict:
  """``{name: {split: (features, labels)}}`` for every feature function of ``fns``, all computed
  in one read of each split."""
  out = {name: {} for name in fns}
  for split, src in sources.items():
    feats, labels = features.extract_many(fns, src, batch_size=config.probe.batch_size,
                                          progress=f"[demo] {split} features")
    for name in fns:
      out[name][split] = (feats[name], labels)
  return out


@workdir_lib.guarded
def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  start = time.time()
  workdir = epath.Path(workdir)
  sources = datasets.probe_sources(config)  # a bad probe.train_examples stops before pretraining
  pre = pretrain.run(config, str(workdir))
  pretrain_seconds = time.time() - start
  model = pre.model()

  class_names = datasets.class_names(config)
  print0("[demo] extracting features: " +
         ", ".join(f"{k} {len(v):,}" for k, v in sources.items()))
  random_model = methods.build_model(config, nnx.Rngs(config.seed))  # pretraining's start
  size, readout = config.data.image_size, config.probe.readout
  fns = {"OTCXR": features.feature_fn(model.encoder, size, readout),
         "random init": features.feature_fn(random_model.encoder, size, readout)}
  if jax.tree.leaves(nnx.state(random_model.encoder, nnx.BatchStat)):
    # BatchNorm: the random encoder in eval mode does not normalise at all (running mean 0,
    # variance 1); the same weights with statistics estimated on data are a second floor.
    recalibrated = features.recalibrate_batch_stats(
        methods.build_model(config, nnx.Rngs(config.seed)).encoder, sources["train"],
        image_size=config.data.image_size, batch_size=config.train.batch_size)
    fns["random init, data BN stats"] = features.feature_fn(recalibrated, size, readout)
  fns["raw pixels"] = features.pixel_fn(config.probe.pixel_floor_size)
  feats = probe_features(config, fns, sources)
  probes = {}
  for name, f in feats.items():
    print0(f"[demo] linear probe: {name} ({f['train'][0].shape[1]} features)")
    probes[name] = linear_probe.run(
        f, workdir=workdir / "probes", name=name.replace(" ", "_").replace(",", ""),
        weight_decays=config.probe.weight_decays, num_steps=config.probe.num_steps,
        batch_size=config.probe.batch_size, learning_rate=config.probe.learning_rate,
        seed=config.seed, whiten=config.probe.whiten)
    print0(f"[demo] {name}: validation mean AUC {probes[name].val_auc:.3f}, "
           f"test mean AUC {probes[name].test_auc:.3f}")

  test_labels = feats["OTCXR"]["test"][1]
  summary = {
      name: dict(test_mean_auc=p.test_auc, val_mean_auc=p.val_auc, weight_decay=p.weight_decay,
                 test_per_class=dict(zip(class_names, map(_num, p.test_per_class))),
                 test_mean_auc_ci95=list(metrics.bootstrap_auc_ci(
                     test_labels, p.test_scores, num_samples=500, seed=config.seed).mean))
      for name, p in probes.items()}

  ours = probes["OTCXR"].test_scores
  for name, p in probes.items():
    if name != "OTCXR":
      diff, low, high = metrics.paired_mean_auc_difference(
          test_labels, ours, p.test_scores, num_samples=500, seed=config.seed)
      summary[name]["otcxr_minus_this"] = dict(difference=diff, ci95=[low, high])
  # Does the pretrained encoder's output carry the image or only the position?
  # (evaluation/diagnostics.py), on up to 512 training images.
  train_images = datasets.split_source(config, config.data.train_split)
  spread = {name: diagnostics.feature_spread(net.encoder, train_images,
                                             image_size=config.data.image_size,
                                             batch_size=config.probe.batch_size).as_dict()
            for name, net in (("OTCXR", model), ("random init", random_model))}

  sample = np.stack([sources["test"][i]["image"] for i in range(3)])
  pairs = visualize.pair_examples(model, sample, aug=config_lib.augment_config(config),
                                  objective=config_lib.objective_config(config), seed=config.seed)
  result = {
      "probes": summary,
      "feature_spread": spread,
      "pretrain_steps": config.train.num_steps,
      "pretrain_seconds": pretrain_seconds,
      "total_seconds": time.time() - start,
      "num_images": {k: len(v) for k, v in sources.items()},  # the probes'
      "pretrain_images": len(train_images),
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  if jax.process_index() == 0:
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2))
    demo_report.write_demo_report(workdir, config=config, result=result, history=pre.history,
                             probes=probes, class_names=class_names, pairs=pairs)
  summaries.write_results(workdir, "demo", result, step=config.train.num_steps,
                          enabled=config.train.tensorboard)  # beside pretraining's curves
  print0(f"[demo] done in {format_duration(time.time() - start)}: test mean AUC " +
         ", ".join(f"{k} {p.test_auc:.3f}" for k, p in probes.items()) +
         f"; report: {workdir / 'report.md'}")
  return result


def _num(x) -> float | None:
  return None if np.isnan(x) else float(x)
