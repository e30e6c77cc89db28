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
scikit-learn's L-BFGS on the same features). One head per L2 strength ("weight decay") of a small
grid is trained, all side by side in one run of the shared train loop (same optimiser code,
checkpoints and logs as pretraining; :func:`train_heads`), the penalty in the objective
(:func:`penalised_bce`: scikit-learn's logistic regression with ``C = 1 / (weight_decay * N)``);
the one with the best validation mean AUC is
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
  history: list[dict[str, float]]  # every head's loss (``loss_wd<l2>``) by logged step


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
  The probe and fine-tuning's linear-probe stage (``modes/finetune.py``) train their grids side
  by side with :func:`train_heads`, which gives these heads.
  """
  head = LinearClassifier(train_x.shape[1], train_y.shape[1], rngs=nnx.Rngs(seed))
  result = _train(head, penalised_bce(weight_decay), train_x, train_y, workdir=workdir,
                  name=name, num_steps=num_steps, batch_size=batch_size,
                  learning_rate=learning_rate, seed=seed, log_every=log_every, hooks=hooks,
                  hook_every=hook_every)
  return result.model(), result.history


class StackedHeads(nnx.Module):
  """``H`` linear heads side by side, ``logits[h] = x W[h] + b[h]``, each initialised as
  :class:`LinearClassifier` with the same seed (so every head starts where :func:`train_head`'s
  would)."""

  def __init__(self, in_dim: int, num_classes: int, num_heads: int, *, seed: int):
    single = LinearClassifier(in_dim, num_classes, rngs=nnx.Rngs(seed))
    self.kernel = nnx.Param(jnp.tile(single.linear.kernel[...][None], (num_heads, 1, 1)))
    self.bias = nnx.Param(jnp.tile(single.linear.bias[...][None], (num_heads, 1)))

  def __call__(self, x: jax.Array) -> jax.Array:
    """``(B, D) -> (H, B, K)`` logits."""
    return jnp.einsum("bd,hdk->hbk", x, self.kernel[...]) + self.bias[...][:, None]

  def head(self, h: int) -> LinearClassifier:
    """Head ``h`` as a :class:`LinearClassifier`."""
    kernel, bias = self.kernel[...], self.bias[...]
    out = LinearClassifier(kernel.shape[1], kernel.shape[2], rngs=nnx.Rngs(0))
    out.linear.kernel[...] = kernel[h]
    out.linear.bias[...] = bias[h]
    return out


def stacked_penalised_bce(l2s: Sequence[float]):
  """:func:`penalised_bce` of every head of a :class:`StackedHeads`, head ``h`` with L2 strength
  ``l2s[h]``, summed: each head's gradient is its own loss's, so Adam (elementwise, no clipping)
  moves every head exactly as training it alone on the same batches would. The aux holds each
  head's loss as ``loss_wd<l2>``."""
  l2s = tuple(float(v) for v in l2s)
  strengths = jnp.asarray(l2s, jnp.float32)

  def loss_fn(model: StackedHeads, batch, rng):
    del rng
    logits = model(batch["x"])
    bce = optax.sigmoid_binary_cross_entropy(logits, batch["y"][None]).mean(axis=(1, 2))
    kernel = model.kernel[...]
    penalty = 0.5 * strengths * jnp.sum(jnp.square(kernel), axis=(1, 2)) / kernel.shape[2]
    per_head = bce + penalty
    return jnp.sum(per_head), {f"loss_wd{v:g}": per_head[h] for h, v in enumerate(l2s)}
  return loss_fn


def train_heads(train_x: np.ndarray, train_y: np.ndarray, *, workdir, name: str,
                num_steps: int, batch_size: int, learning_rate: float,
                weight_decays: Sequence[float], seed: int, log_every: int = 100,
                hooks: Sequence[loop.Hook] = (), hook_every: int = 0
                ) -> tuple[list[LinearClassifier], list]:
  """:func:`train_head` for every L2 strength of ``weight_decays`` at once, in one run of the
  loop (one compilation, one pass over the batches): the heads are those :func:`train_head`
  trains one at a time, up to float rounding. ``hooks`` see the :class:`StackedHeads`. Returns
  ``(heads, history)``, the history's records holding every head's loss (``loss_wd<l2>``)."""
  heads = StackedHeads(train_x.shape[1], train_y.shape[1], len(weight_decays), seed=seed)
  result = _train(heads, stacked_penalised_bce(weight_decays), train_x, train_y,
                  workdir=workdir, name=name, num_steps=num_steps, batch_size=batch_size,
                  learning_rate=learning_rate, seed=seed, log_every=log_every, hooks=hooks,
                  hook_every=hook_every)
  trained = result.model()
  return [trained.head(h) for h in range(len(weight_decays))], result.history


def _train(model: nnx.Module, loss_fn, train_x: np.ndarray, train_y: np.ndarray, *, workdir,
           name: str, num_steps: int, batch_size: int, learning_rate: float, seed: int,
           log_every: int, hooks: Sequence[loop.Hook] = (), hook_every: int = 0):
  """The probe's run of the shared loop: Adam, 5% warm-up then cosine decay, no decoupled weight
  decay (the L2 is in the loss), batches of ``batch_size`` capped to the examples."""
  batch_size = min(batch_size, len(train_x) // jax.device_count() * jax.device_count())
  batches = pipeline.array_batches({"x": train_x, "y": train_y}, global_batch_size=batch_size,
                                   seed=seed, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  schedule = optim.make_schedule(peak=learning_rate, total_steps=num_steps,
                                 warmup_steps=num_steps // 20)
  tx = optim.make_optimizer("adamw", schedule=schedule, weight_decay=0.0)  # L2 in the loss
  cfg = loop.LoopConfig(num_steps=num_steps, log_every=min(log_every, num_steps),
                        checkpoint_every=0, max_to_keep=1, tensorboard=False,
                        hook_every=hook_every)
  return loop.run(name=name, workdir=workdir, model=model, loss_fn=loss_fn, tx=tx,
                  batches=batches, global_batch_size=batch_size, config=cfg,
                  rng=jax.random.key_data(jax.random.key(seed)), schedule=schedule,
                  hooks=hooks)


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
  heads, history = train_heads(tx, ty, workdir=workdir, name=name, num_steps=num_steps,
                               batch_size=batch_size, learning_rate=learning_rate,
                               weight_decays=weight_decays, seed=seed)
  best = None
  val_by_wd = {}
  for wd, head in zip(weight_decays, heads):
    val_auc = metrics.mean_auc(vy, _predict(head, vx))
    val_by_wd[float(wd)] = float(val_auc)
    if best is None or val_auc > best[0]:
      best = (val_auc, wd, head, history)
  val_auc, wd, head, history = best
  if len(weight_decays) > 1 and wd in (min(weight_decays), max(weight_decays)):
    print0(f"[probe] {name}: the weight decay chosen, {wd:g}, is at an end of the grid "
           f"{tuple(weight_decays)}: a wider grid may do better")
  scores = _predict(head, sx)
  per_class = metrics.per_class_auc(sy, scores)
  return ProbeResult(weight_decay=float(wd), val_auc=float(val_auc),
                     test_auc=float(metrics.mean_auc(sy, scores)), test_per_class=per_class,
                     test_scores=scores, val_by_weight_decay=val_by_wd, history=history)
