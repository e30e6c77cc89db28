"""Linear probe on frozen features: a multi-label linear head trained with binary cross-entropy.

Features are whitened with the training split's statistics (``whiten=True``, the default;
``evaluation/whitening.py``: centred, rotated onto their principal axes and scaled to unit
variance along each, directions whose variance is below ``1e-6`` of the largest dropped) or only
standardised per feature (``whiten=False``, and above ``whitening.MAX_FEATURES`` features, where
the covariance would not fit in memory). Whitening makes the probe's result that of the logistic
regression itself, not of how far a first-order optimiser gets in a fixed number of steps:
self-supervised features are often nearly collinear, their information in directions of small
variance, where gradient steps on standardised features move slowly (docs/results.md, "The
linear probe was optimiser-limited": 0.662 standardised against 0.731 whitened and 0.731 for
scikit-learn's L-BFGS on the same features). The head is trained by the shared train loop (same
optimiser code, checkpoints and logs as pretraining) for each L2 strength ("weight decay") of a
small grid, the penalty in the objective (:func:`penalised_bce`: scikit-learn's logistic
regression with ``C = 1 / (weight_decay * N)``); the one with the best validation mean AUC is
kept, and the test split is evaluated once with it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from otcxr_jax.data import pipeline
from otcxr_jax.evaluation import metrics, whitening
from otcxr_jax.models import LinearClassifier
from otcxr_jax.training import loop, optim
from otcxr_jax.training.distributed import print0


@dataclasses.dataclass
class ProbeResult:
  weight_decay: float
  val_auc: float                 # mean AUC on validation of the selected head
  test_auc: float                # mean AUC on test (evaluated once)
  test_per_class: np.ndarray     # (K,) NaN where undefined
  test_scores: np.ndarray        # (N, K) probabilities on test
  val_by_weight_decay: dict[float, float]
  history: list[dict[str, float]]


def penalised_bce(l2: float):
  """The probe's objective: binary cross-entropy averaged over examples and classes plus
  ``l2 / 2 * ||w_k||^2`` per class ``k`` (the bias is not penalised), averaged over the classes.

  Per class this is scikit-learn's L2-regularised logistic regression divided by ``C * N``: its
  minimiser is ``LogisticRegression(C=1 / (l2 * N))``'s on ``N`` training examples, so the grid
  of ``l2`` values regularises whatever optimiser reaches the minimum. (Decoupled AdamW weight
  decay at these rates shrinks the weights by under 1% over a probe's steps: every value of a
  grid gave the same head.)
  """
  def loss_fn(model: LinearClassifier, batch, rng):
    del rng
    logits = model(batch["x"])
    bce = optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()
    kernel = model.linear.kernel[...]
    penalty = 0.5 * l2 * jnp.sum(jnp.square(kernel)) / kernel.shape[1]
    return bce + penalty, {"bce": bce, "l2_penalty": penalty}
  return loss_fn


def _predict(model: LinearClassifier, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
  fn = jax.jit(lambda x: jax.nn.sigmoid(model(x)))
  return np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + batch_size])))
                         for i in range(0, len(x), batch_size)])


def train_head(train_x: np.ndarray, train_y: np.ndarray, *, workdir, name: str,
               num_steps: int, batch_size: int, learning_rate: float, weight_decay: float,
               seed: int, log_every: int = 100, hooks: Sequence[loop.Hook] = (),
               hook_every: int = 0) -> tuple[LinearClassifier, list]:
  """Trains one linear head on (standardised) features with the shared loop.

  Minimises :func:`penalised_bce` with L2 strength ``weight_decay`` (the gradient of the penalty
  is the weight times ``weight_decay``: PyTorch's coupled ``weight_decay``), by Adam with linear
  warm-up over 5% of ``num_steps`` and cosine decay; the head starts at N(0, 0.01²) (seed
  ``seed``), the batch is ``batch_size`` capped to the number of examples.
  ``hooks`` are called every ``hook_every`` steps (``loop.run``'s periodic evaluators; 0: never).
  Fine-tuning's linear-probe stage (``modes/finetune.py``) trains its heads with this function.
  """
  batch_size = min(batch_size, len(train_x) // jax.device_count() * jax.device_count())
  batches = pipeline.array_batches({"x": train_x, "y": train_y}, global_batch_size=batch_size,
                                   seed=seed, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  schedule = optim.make_schedule(peak=learning_rate, total_steps=num_steps,
                                 warmup_steps=num_steps // 20)
  tx = optim.make_optimizer("adamw", schedule=schedule, weight_decay=0.0)  # L2 in the loss
  head = LinearClassifier(train_x.shape[1], train_y.shape[1], rngs=nnx.Rngs(seed))
  cfg = loop.LoopConfig(num_steps=num_steps, log_every=min(log_every, num_steps),
                        checkpoint_every=0, max_to_keep=1, tensorboard=False,
                        hook_every=hook_every)
  result = loop.run(name=name, workdir=workdir, model=head, loss_fn=penalised_bce(weight_decay),
                    tx=tx, batches=batches, global_batch_size=batch_size, config=cfg,
                    rng=jax.random.key_data(jax.random.key(seed)), schedule=schedule,
                    hooks=hooks)
  return result.model(), result.history


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """Each feature centred and divided by its standard deviation on ``train``."""
  mean = train.mean(0, keepdims=True)
  std = train.std(0, keepdims=True) + 1e-6
  return [(a - mean) / std for a in (train, *others)]


def run(features: dict[str, tuple[np.ndarray, np.ndarray]], *, workdir, name: str,
        weight_decays: Sequence[float], num_steps: int, batch_size: int,
        learning_rate: float, seed: int = 0, whiten: bool = True) -> ProbeResult:
  """Probes ``features = {'train': (x, y), 'validation': (x, y), 'test': (x, y)}``, whitened
  (``whiten``) or standardised."""
  (tx, ty), (vx, vy), (sx, sy) = features["train"], features["validation"], features["test"]
  if whiten and not whitening.applies(tx.shape[1]):
    print0(f"[probe] {name}: {tx.shape[1]} features, more than the {whitening.MAX_FEATURES} "
           "whitened at most: standardising them instead")
    whiten = False
  tx, vx, sx = (whitening.whitened if whiten else standardise)(tx, vx, sx)
  best = None
  val_by_wd = {}
  for wd in weight_decays:
    head, history = train_head(tx, ty, workdir=workdir, name=f"{name}_wd{wd:g}",
                               num_steps=num_steps, batch_size=batch_size,
                               learning_rate=learning_rate, weight_decay=wd, seed=seed)
    val_auc = metrics.mean_auc(vy, _predict(head, vx))
    val_by_wd[float(wd)] = float(val_auc)
    if best is None or val_auc > best[0]:
      best = (val_auc, wd, head, history)
  val_auc, wd, head, history = best
  scores = _predict(head, sx)
  per_class = metrics.per_class_auc(sy, scores)
  return ProbeResult(weight_decay=float(wd), val_auc=float(val_auc),
                     test_auc=float(metrics.mean_auc(sy, scores)), test_per_class=per_class,
                     test_scores=scores, val_by_weight_decay=val_by_wd, history=history)
