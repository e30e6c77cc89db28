"""Weighted k-nearest-neighbour multi-label classifier on frozen features.

The non-parametric evaluation of self-supervised encoders of Wu et al. (CVPR 2018, "Unsupervised
feature learning via non-parametric instance discrimination") as used by DINO (Caron et al., ICCV
2021), with the vote extended to multi-label targets. Features are first centred on the bank's
mean feature ``μ`` (bank and queries alike), then L2-normalised, so the similarity of a query
``q`` and a bank example ``x_i`` is the cosine of ``q - μ`` and ``x_i - μ``:
``s_i = (q - μ)·(x_i - μ) / (‖q - μ‖ ‖x_i - μ‖)``. With ``N_k(q)`` the ``k`` most similar bank
examples and ``w_i = exp(s_i / T)``, the score of class ``c`` is the weighted fraction of
neighbours positive for ``c``:

    score_c(q) = Σ_{i ∈ N_k(q)} w_i y_ic / Σ_{i ∈ N_k(q)} w_i   ∈ [0, 1].

Why centre: pooled features of an encoder (ReLU outputs, averaged over positions) share a large
common component, and the uncentred cosine of two such features is close to 1 whatever the
images, so the neighbours are decided by small differences the temperature cannot separate; the
centred cosine compares what distinguishes the images (the correlation of their deviations from
the mean image).

With ``whiten=True`` (mode ``knn``'s default, ``config.knn.whiten``) bank and queries are first
whitened with the bank's statistics (``evaluation/whitening.py``), as the linear probe's inputs
are: the deviations of self-supervised pooled features are often nearly collinear, so the
centred cosine is decided by a few directions of large variance; whitened, every principal
direction counts alike (on the demo's OTCXR features: test mean AUC 0.563 centred, 0.662
whitened; docs/results.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from otcxr_jax.evaluation import whitening

_EPS = 1e-12


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _EPS)


@functools.partial(jax.jit, static_argnames=("k",))
def _batch_scores(bank: jax.Array, bank_labels: jax.Array, queries: jax.Array, *, k: int,
                  temperature: jax.Array) -> jax.Array:
  """``(B, K)`` scores of a batch of queries against the (already normalised) bank."""
  sims = _normalise(queries) @ bank.T                          # (B, N) cosine similarities
  top_sims, top_idx = jax.lax.top_k(sims, k)                   # (B, k)
  # exp((s - s_max) / T): the common factor exp(s_max / T) cancels in the ratio, no overflow.
  weights = jnp.exp((top_sims - top_sims[:, :1]) / temperature)
  votes = jnp.einsum("bk,bkc->bc", weights, bank_labels[top_idx])
  return votes / weights.sum(axis=1, keepdims=True)


def knn_scores(bank_features: ArrayLike, bank_labels: ArrayLike, query_features: ArrayLike, *,
               k: int, temperature: float, batch_size: int = 256, center: bool = True,
               whiten: bool = False) -> np.ndarray:
  """Weighted kNN scores of each query for each class (see the module docstring).

  Args:
    bank_features: ``(N, D)`` features of the labelled bank (the training split).
    bank_labels: ``(N, K)`` binary labels of the bank.
    query_features: ``(M, D)`` features to score.
    k: number of neighbours, ``1 <= k <= N``.
    temperature: ``T > 0`` of the weights ``exp(s / T)``.
    batch_size: queries scored per jitted call (the last batch is padded, one compilation).
    center: subtract the bank's mean feature from bank and queries before normalising (False:
      the plain cosine of the raw features, as in Wu et al. and DINO).
    whiten: first whiten bank and queries with the bank's statistics
      (``evaluation/whitening.py``; whitened features are centred, so ``center`` is then moot):
      the cosine weighs every principal direction alike, not only the few of largest variance
      (PCA whitening before cosine retrieval, Jégou and Chum, ECCV 2012). Features wider than
      ``whitening.MAX_FEATURES`` are only centred.

  Returns:
    ``(M, K)`` float32 scores in ``[0, 1]``.
  """
  bank_x = np.asarray(bank_features, np.float32)
  bank_y = np.asarray(bank_labels, np.float32)
  queries = np.asarray(query_features, np.float32)
  if bank_x.ndim != 2 or queries.ndim != 2 or bank_x.shape[1] != queries.shape[1]:
    raise ValueError(f"bank_features and query_features must be (N, D) and (M, D), got "
                     f"{bank_x.shape} and {queries.shape}.")
  if bank_y.ndim != 2 or len(bank_y) != len(bank_x):
    raise ValueError(f"bank_labels must be (N, K) with N={len(bank_x)}, got {bank_y.shape}.")
  if not (isinstance(k, (int, np.integer)) and 1 <= k <= len(bank_x)):
    raise ValueError(f"k must be an int in [1, {len(bank_x)}] (the bank size), got {k!r}.")
  if not temperature > 0:
    raise ValueError(f"temperature must be positive, got {temperature!r}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size!r}.")
  if whiten and whitening.applies(bank_x.shape[1]):
    bank_x, queries = whitening.whitened(bank_x, queries)
  if center:
    mean = bank_x.mean(axis=0, dtype=np.float64).astype(np.float32)
    bank_x, queries = bank_x - mean, queries - mean
  bank = _normalise(jnp.asarray(bank_x))
  labels = jnp.asarray(bank_y)
  size = min(batch_size, len(queries)) or 1
  padded = np.concatenate(
      [queries, np.zeros((-len(queries) % size, queries.shape[1]), np.float32)])
  scores = [np.asarray(_batch_scores(bank, labels, jnp.asarray(padded[i:i + size]), k=int(k),
                                     temperature=jnp.float32(temperature)))
            for i in range(0, len(padded), size)]
  return np.concatenate(scores or [np.zeros((0, bank_y.shape[1]), np.float32)])[:len(queries)]
