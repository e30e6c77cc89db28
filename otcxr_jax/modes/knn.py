"""Weighted kNN evaluation of a frozen encoder (pretrained or at random init).

The training split's pooled features are the labelled bank; validation and test images are
scored by the weighted vote of their ``config.knn.k`` most similar bank images
(``evaluation/knn.py``, temperature ``config.knn.temperature``), similarity being the cosine of
features centred on the bank's mean feature. No parameter is trained, so validation and test are
both reported. Writes ``<workdir>/metrics.json`` and prints a table.
"""

from __future__ import annotations

import time

import jax
import ml_collections
from etils import epath

from otcxr_jax.data import datasets
from otcxr_jax.evaluation import knn
from otcxr_jax.modes import linear_probe, network
from otcxr_jax.reporting import summary
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0

RUN_NAME = "knn"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the evaluation of the network ``config`` names (``modes/network.py``) in ``workdir``."""
  return _run(network.resolve(config, workdir), workdir)


@workdir_lib.guarded
def _run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  start = time.time()
  workdir = epath.Path(workdir)
  encoder, origin = network.encoder(config, workdir)
  print0(f"[{RUN_NAME}] encoder {config.model.encoder}: " +
         ", ".join(f"{k} {v}" for k, v in origin.items()))
  feats = linear_probe.frozen_features(config, encoder, run_name=RUN_NAME)
  bank_x, bank_y = feats["train"]
  if config.knn.k > len(bank_x):
    raise ValueError(f"config.knn.k={config.knn.k} exceeds the {len(bank_x)} images of the "
                     f"training split (the neighbour bank).")
  class_names = datasets.class_names(config)
  splits = {}
  for split in ("validation", "test"):
    x, y = feats[split]
    scores = knn.knn_scores(bank_x, bank_y, x, k=config.knn.k,
                            temperature=config.knn.temperature,
                            batch_size=config.probe.batch_size, whiten=config.knn.whiten)
    splits[split] = summary.auc_summary(y, scores, class_names, seed=config.seed)
  result = {
      "mode": RUN_NAME,
      "dataset": f"{config.data.name}/{config.data.config}",
      **origin,
      "encoder": config.model.encoder,
      "k": config.knn.k,
      "temperature": config.knn.temperature,
      "similarity": ("cosine of features whitened with the bank's statistics"
                     if config.knn.whiten else "cosine of features centred on the bank mean"),
      "bank_size": int(len(bank_x)),
      **splits,
      "seconds": time.time() - start,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
  }
  path = summary.write_metrics(workdir, result, tensorboard=config.train.tensorboard)
  print0(f"[{RUN_NAME}] {origin['init']} encoder, k={config.knn.k}, "
         f"T={config.knn.temperature:g}:\n{summary.auc_table(splits)}\n"
         f"[{RUN_NAME}] metrics: {path}")
  return result
