"""SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv 2002.05709, Sec. 2.1, Eq. (1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from otcxr_jax.objectives import _baseline_common as common


@dataclasses.dataclass(frozen=True)
class SimCLRConfig:
  """Hyperparameters of `nt_xent_loss` (its keyword arguments).

  Attributes:
    temperature: softmax temperature τ > 0. 0.1 is the default of the authors' reference
      implementation (google-research/simclr), used for the paper's large-batch runs.
  """

  temperature: float = 0.1

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first field outside its valid range."""
    common.check_number("SimCLRConfig", "temperature", self.temperature, low=0.0, low_open=True)


def nt_xent_loss(z_s: jax.Array, z_t: jax.Array, *,
                 temperature: float = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
  """NT-Xent over the ``2B`` embeddings of two views, each anchor against ``2B - 1`` candidates.

  With ``u = [z_s; z_t]`` (``2B`` rows), ``sim(i, k) = uᵢ·u_k / (‖uᵢ‖ ‖u_k‖)`` and ``p(i)`` the
  other view of the same example (``p(i) = i ± B``)::

    ℓᵢ = -log( exp(sim(i, p(i)) / τ) / Σ_{k ≠ i} exp(sim(i, k) / τ) ),   L = (1 / 2B) Σᵢ ℓᵢ

  i.e. a ``2B``-way softmax per anchor with the self-similarity masked out. Under a ``jax.jit``
  whose inputs are sharded along the batch axis, ``B`` is the global batch: the similarity matrix
  spans every device, so the negatives are the whole global batch (the cross-replica gather of
  SimCLR's TPU implementation, done by the compiler).

  Args:
    z_s: ``(B, D)`` embeddings of the source views.
    z_t: ``(B, D)`` embeddings of the target views; row ``b`` of each comes from image ``b``.
    temperature: τ > 0 (a Python number).

  Returns:
    ``(loss, metrics)``: the float32 loss and ``{"loss", "accuracy", "positive_cosine"}``, where
    accuracy is the fraction of anchors whose most similar candidate is their positive.
  """
  SimCLRConfig(temperature=temperature)
  common.check_pair(z_s, z_t, ("z_s", "z_t"), min_batch=1)
  b = z_s.shape[0]
  u = common.l2_normalize(jnp.concatenate([z_s, z_t], axis=0).astype(jnp.float32))
  cos = u @ u.T
  logits = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, cos / temperature)
  positive = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
  rows = jnp.arange(2 * b)
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[rows, positive])
  metrics = {
      "loss": loss,
      "accuracy": jnp.mean((jnp.argmax(logits, axis=1) == positive).astype(jnp.float32)),
      "positive_cosine": jnp.mean(cos[rows, positive]),
  }
  return loss, metrics
