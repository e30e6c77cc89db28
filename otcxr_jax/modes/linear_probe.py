"""Frozen-encoder linear probe of a pretraining run (or of the same encoder at random init, or of
raw pixels).

1. the encoder ``config.probe.init`` selects (``modes/network.py``): that of the latest checkpoint
   of the run ``config.probe.checkpoint_dir`` names (default: the pretraining run in
   ``<workdir>``), or the same network at its initialisation; ``init='pixels'`` reads no network:
   the images downsampled to ``probe.pixel_floor_size`` are the features (the demo's raw-pixel
   floor, for any dataset);
2. frozen features of the train, validation and test splits (``probe.readout``: pooled, or the
   dense map flattened; pixels: flattened), the training split cut to ``probe.train_examples``
   labelled images when set (``datasets.probe_sources``);
3. a multi-label linear head per weight decay of ``config.probe.weight_decays``, the one with the
   best validation mean AUC kept, the test split evaluated once with it;
4. ``<workdir>/metrics.json`` (per-class and mean AUC with bootstrap 95% intervals; for an
   encoder also its feature spread on the first 512 training images, ``feature_spread``,
   ``evaluation/diagnostics.py``), the test scores in ``<workdir>/test_scores.npz``
   (``evaluation/score_files.py``) and a table.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.data import datasets
from otcxr_jax.evaluation import diagnostics, features, linear_probe, score_files
from otcxr_jax.modes import network
from otcxr_jax.reporting import summary
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0

RUN_NAME = "linear_probe"


def frozen_features(config: ml_collections.ConfigDict, encoder: nnx.Module, *,
                    run_name: str = RUN_NAME) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{'train' | 'validation' | 'test': (features (N, F), labels (N, K))}``."""
  d = config.data
  fn = features.feature_fn(encoder, d.image_size, config.probe.readout)
  out = {name: features.extract(fn, source, batch_size=config.probe.batch_size,
                                progress=f"[{run_name}] {name} features")
         for name, source in datasets.probe_sources(config).items()}
  print0(f"[{run_name}] features: " +
         ", ".join(f"{k} {x.shape[0]:,}x{x.shape[1]}" for k, (x, _) in out.items()))
  return out


def pixel_features(config: ml_collections.ConfigDict, *, run_name: str = RUN_NAME
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The raw-pixel floor: each split's images downsampled to ``probe.pixel_floor_size``."""
  p = config.probe
  out = {name: features.downsampled_pixels(source, size=p.pixel_floor_size,
                                           batch_size=p.batch_size,
                                           progress=f"[{run_name}] {name} pixels")
         for name, source in datasets.probe_sources(config).items()}
  print0(f"[{run_name}] raw pixels at {p.pixel_floor_size}x{p.pixel_floor_size}: " +
         ", ".join(f"{k} {x.shape[0]:,}x{x.shape[1]}" for k, (x, _) in out.items()))
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the evaluation of the network ``config`` names (``modes/network.py``), or of raw pixels
  (``probe.init='pixels'``), in ``workdir``."""
  return _run(network.resolve(config, workdir), workdir)  # pixels: no network, config as it is


def _features(config: ml_collections.ConfigDict, workdir: epath.Path):
  """The probe's features, where they come from, and the encoder's feature spread (None for
  pixels)."""
  if config.probe.init == config_lib.PIXEL_FLOOR:
    return pixel_features(config), {"init": config_lib.PIXEL_FLOOR, "encoder": None,
                                    "pixel_floor_size": config.probe.pixel_floor_size}, None
  encoder, origin = network.encoder(config, workdir)
  print0(f"[{RUN_NAME}] encoder {config.model.encoder}: " +
         ", ".join(f"{k} {v}" for k, v in origin.items()))
  feats = frozen_features(config, encoder)
  return feats, origin, encoder_spread(config, encoder)


def encoder_spread(config: ml_collections.ConfigDict, encoder: nnx.Module,
                   run_name: str = RUN_NAME) -> dict[str, float]:
  """Does the encoder's output carry the image or only the position? The diagnostics of
  ``evaluation/diagnostics.py`` on the first 512 training images."""
  spread = diagnostics.feature_spread(
      encoder, datasets.split_source(config, config.data.train_split),
      image_size=config.data.image_size, batch_size=config.probe.batch_size)
  print0(f"[{run_name}] feature spread: position share {spread.position_share:.4f}, image "
         f"share {spread.image_share:.4f}, pooled std/|mean| {spread.pooled_std_over_mean:.4f}")
  return spread.as_dict()


@workdir_lib.guarded
def _run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  start = time.time()
  workdir = epath.Path(workdir)
  feats, origin, spread = _features(config, workdir)
  workdir_lib.save_config(config, workdir)  # before the probes' checkpoints
  p = config.probe
  probe = linear_probe.run(feats, workdir=workdir / "probes", name=f"{RUN_NAME}_{p.init}",
                           weight_decays=p.weight_decays, num_steps=p.num_steps,
                           batch_size=p.batch_size, learning_rate=p.learning_rate,
                           seed=config.seed, whiten=p.whiten)
  class_names = datasets.class_names(config)
  test = summary.auc_summary(feats["test"][1], probe.test_scores, class_names, seed=config.seed)
  result = {
      "mode": RUN_NAME,
      "dataset": f"{config.data.name}/{config.data.config}",
      "encoder": config.model.encoder,
      **origin,
      "weight_decay": probe.weight_decay,
      "validation_mean_auc_by_weight_decay": {f"{k:g}": v
                                              for k, v in probe.val_by_weight_decay.items()},
      "validation_mean_auc": probe.val_auc,
      "test": test,
      "feature_spread": spread,
      "seconds": time.time() - start,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  path = summary.write_metrics(workdir, result, tensorboard=config.train.tensorboard)
  score_files.save_scores(workdir, feats["test"][1], probe.test_scores, class_names)
  what = "raw pixels" if p.init == config_lib.PIXEL_FLOOR else f"{p.init} encoder"
  print0(f"[{RUN_NAME}] {what}, weight decay {probe.weight_decay:g} (validation mean "
         f"AUC {probe.val_auc:.3f}):\n{summary.auc_table({'test': test})}\n"
         f"[{RUN_NAME}] metrics: {path}")
  return result
