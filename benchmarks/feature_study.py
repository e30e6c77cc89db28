r"""What do an encoder's pooled features carry? Pretrain (or train supervised), then probe.

    python benchmarks/feature_study.py --config configs/demo.py --workdir workdirs/study/otcxr \
        --config.train.num_steps=200
    python benchmarks/feature_study.py --config configs/demo.py --workdir workdirs/study/vicreg \
        --config.train.num_steps=200 --config.method=vicreg
    python benchmarks/feature_study.py --config configs/demo.py --workdir workdirs/study/random \
        --kind=random
    python benchmarks/feature_study.py --config configs/demo.py --workdir workdirs/study/sup \
        --kind=supervised --config.train.num_steps=200
    python benchmarks/feature_study.py --config configs/demo.py --workdir workdirs/study/pixels \
        --kind=pixels

One row of evidence per command, appended to ``<workdir>/../feature_study.jsonl`` and printed:

* ``--kind=pretrain`` (default): the config's self-supervised pretraining (``modes/pretrain.run``,
  resumable), then its encoder is probed;
* ``--kind=random``: the same encoder at its random initialisation;
* ``--kind=supervised``: the same encoder with a linear head trained by binary cross-entropy on
  every training label, for ``train.num_steps`` steps of ``train.batch_size`` (AdamW at the
  config's peak rate, warm-up and cosine decay, no augmentation): what the same compute buys with
  labels, the ceiling a self-supervised encoder of that budget is measured against;
* ``--kind=pixels``: images area-downsampled to ``probe.pixel_floor_size`` squared, flattened.

Probes are scikit-learn's L2 logistic regression (an independent implementation of the project's
linear probe), one per class, on standardised features, ``C`` chosen on validation mean AUC from
``--Cs``; the test split is scored once. Encoders are probed on three feature sets: ``pooled``
(the global average pool every evaluation uses), ``stages`` (the global average pools of every
stage, concatenated), ``grid2`` (the last map averaged over a 2x2 grid, which keeps where
things are) and ``map`` (the whole last map, flattened). The row also holds the feature-spread diagnostics of ``evaluation/diagnostics.py``
on 512 training images.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Sequence

if not __package__:  # run as a file: make the repository root importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from otcxr_jax import config_lib  # noqa: E402
from otcxr_jax.data import datasets  # noqa: E402
from otcxr_jax.evaluation import diagnostics, features  # noqa: E402
from otcxr_jax.models import factory  # noqa: E402
from otcxr_jax.modes import pretrain  # noqa: E402

FEATURE_SETS = ("pooled", "stages", "grid2", "map")


def logistic_probe(splits: dict[str, tuple[np.ndarray, np.ndarray]], Cs: Sequence[float]
                   ) -> dict:
  """Per-class logistic regressions on standardised features; C chosen on validation."""
  from sklearn.linear_model import LogisticRegression  # test/benchmark requirement only
  from sklearn.metrics import roc_auc_score
  from sklearn.preprocessing import StandardScaler
  (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (splits[k] for k in ("train", "validation", "test"))
  scaler = StandardScaler().fit(x_tr)
  x_tr, x_va, x_te = (scaler.transform(x) for x in (x_tr, x_va, x_te))
  best = None
  for c in Cs:
    val, test = [], []
    for k in range(y_tr.shape[1]):
      if len(np.unique(y_tr[:, k])) < 2:
        continue
      model = LogisticRegression(C=c, max_iter=300).fit(x_tr, y_tr[:, k])
      if len(np.unique(y_va[:, k])) == 2:
        val.append(roc_auc_score(y_va[:, k], model.decision_function(x_va)))
      if len(np.unique(y_te[:, k])) == 2:
        test.append(roc_auc_score(y_te[:, k], model.decision_function(x_te)))
    row = dict(C=c, validation=float(np.mean(val)), test=float(np.mean(test)),
               test_per_class=[round(float(t), 4) for t in test])
    if best is None or row["validation"] > best["validation"]:
      best = row
  return best


def encoder_features(encoder, images: dict[str, np.ndarray], batch_size: int = 256
                     ) -> dict[str, dict[str, np.ndarray]]:
  """``{feature set: {split: (N, F)}}`` of ``encoder`` in evaluation mode."""
  encoder.eval()
  graphdef, state = nnx.split(encoder)

  @jax.jit
  def fn(state, x):
    out = nnx.merge(graphdef, state, copy=True)(x.astype(jnp.float32) / 255.0)
    stages = jnp.concatenate([v.mean((1, 2)) for _, v in sorted(out.stages.items())], -1)
    d = out.dense
    b, h, w, c = d.shape
    grid2 = d.reshape(b, 2, h // 2, 2, w // 2, c).mean((2, 4)).reshape(b, -1)
    return out.pooled, stages, grid2, d.reshape(b, -1)

  result = {name: {} for name in FEATURE_SETS}
  for split, x in images.items():
    parts = [jax.device_get(fn(state, x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    for j, name in enumerate(FEATURE_SETS):
      result[name][split] = np.concatenate([p[j] for p in parts]).astype(np.float32)
  return result


def train_supervised(config, images: np.ndarray, labels: np.ndarray) -> nnx.Module:
  """The config's encoder plus a linear head, BCE on every label; returns the encoder."""
  t = config.train
  encoder = factory.build_encoder(config, nnx.Rngs(config.seed))
  head = nnx.Linear(encoder.num_features, labels.shape[1], rngs=nnx.Rngs(config.seed + 1))
  peak = config.optim.base_learning_rate * t.batch_size / 256
  schedule = optax.warmup_cosine_decay_schedule(0.0, peak, config.optim.warmup_steps,
                                                t.num_steps)
  model = nnx.List([encoder, head])
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=config.optim.weight_decay),
                            wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    def loss_fn(model):
      logits = model[1](model[0](x).pooled)
      return optax.sigmoid_binary_cross_entropy(logits, y).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  rng = np.random.default_rng(config.seed)
  start = time.time()
  for s in range(t.num_steps):
    idx = rng.integers(0, len(images), t.batch_size)
    loss = step(model, optimizer, jnp.asarray(images[idx], jnp.float32) / 255.0,
                jnp.asarray(labels[idx]))
    if (s + 1) % t.log_every == 0 or s + 1 == t.num_steps:
      rate = (s + 1) * t.batch_size / (time.time() - start)
      print(f"[supervised] step {s + 1}/{t.num_steps} | bce {float(loss):.4f} | "
            f"{rate:.1f} img/s", flush=True)
  return encoder


def study(config, workdir: str, kind: str, Cs: Sequence[float]) -> dict:
  """One row of the study (module docstring)."""
  start = time.time()
  splits = {"train": config.data.train_split, "validation": config.data.val_split,
            "test": config.data.test_split}
  sources = {k: datasets.split_source(config, s) for k, s in splits.items()}
  images = {k: np.stack([src[i]["image"] for i in range(len(src))]) for k, src in sources.items()}
  labels = {k: np.stack([src[i]["labels"] for i in range(len(src))]).astype(np.float32)
            for k, src in sources.items()}
  row = {"kind": kind, "workdir": str(workdir), "method": config.method,
         "steps": config.train.num_steps, "batch_size": config.train.batch_size}
  if kind == "pixels":
    pixels = {k: features.downsampled_pixels(src, size=config.probe.pixel_floor_size)[0]
              for k, src in sources.items()}
    row["probes"] = {"pixels": logistic_probe({k: (pixels[k], labels[k]) for k in pixels}, Cs)}
  else:
    if kind == "pretrain":
      encoder = pretrain.run(config, workdir).model().encoder
    elif kind == "supervised":
      encoder = train_supervised(config, images["train"], labels["train"])
    else:
      encoder = factory.build_encoder(config, nnx.Rngs(config.seed))
    row["train_seconds"] = round(time.time() - start, 1)
    row["feature_spread"] = diagnostics.feature_spread(
        encoder, sources["train"], image_size=config.data.image_size).as_dict()
    feats = encoder_features(encoder, images)
    row["probes"] = {name: logistic_probe({k: (feats[name][k], labels[k]) for k in images}, Cs)
                     for name in FEATURE_SETS}
  row["seconds"] = round(time.time() - start, 1)
  return row


def _define_flags() -> None:
  """Flags of the command line only (importing this module defines none: otcxr_jax.main's
  ``--config`` would clash)."""
  config_flags.DEFINE_config_file("config", None, "A pretraining config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where the run's checkpoints go.")
  flags.DEFINE_enum("kind", "pretrain", ["pretrain", "random", "supervised", "pixels"],
                    "What to probe (module docstring).")
  flags.DEFINE_list("Cs", ["0.01", "0.1", "1.0"], "Inverse L2 strengths tried on validation.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  config = f.config
  config.mode = "pretrain"  # a demo config pretrains here; the probes are this script's
  config_lib.validate(config)
  workdir = epath.Path(f.workdir)
  row = study(config, str(workdir), f.kind, [float(c) for c in f.Cs])
  log = workdir.parent / "feature_study.jsonl"
  log.parent.mkdir(parents=True, exist_ok=True)
  previous = log.read_text() if log.exists() else ""
  log.write_text(previous + json.dumps(row) + "\n")
  print(json.dumps(row), flush=True)
  print("test mean AUC: " + ", ".join(f"{k} {v['test']:.3f}" for k, v in row["probes"].items()))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
