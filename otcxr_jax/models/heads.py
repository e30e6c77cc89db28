"""Heads on encoder features: the dense (1x1) projector and the linear classifier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from otcxr_jax.models.initializers import Dtype, normal, torch_default_uniform


class DenseProjector(nnx.Module):
  """Per-position MLP ``Linear-BN-ReLU-...-Linear`` (VICReg's expander applied as a 1x1 conv).

  ``num_layers`` linear layers: all but the last are followed by BatchNorm and ReLU and have no
  bias (BatchNorm's shift replaces it); the last has a bias. BatchNorm statistics are taken over
  every leading axis, i.e. over batch x positions for ``(B, N, D)`` tokens; train/eval mode
  follows the NNX convention (``model.train()`` / ``model.eval()``).

  Attributes:
    in_dim: input features.
    out_dim: output features.
  """

  def __init__(
      self,
      in_dim: int,
      hidden_dim: int,
      out_dim: int,
      *,
      num_layers: int = 2,
      dtype: Dtype = jnp.float32,
      param_dtype: Dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the projector.

    Args:
      in_dim: input features.
      hidden_dim: width of the hidden layers.
      out_dim: output features.
      num_layers: number of linear layers (>= 1; 1 is a single linear map).
      dtype: computation dtype; outputs are float32.
      param_dtype: parameter dtype.
      rngs: random generators for initialisation.
    """
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim),
                        ("num_layers", num_layers)):
      if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.in_dim = in_dim
    self.out_dim = out_dim
    dims = [in_dim] + [hidden_dim] * (num_layers - 1)
    self.hidden = nnx.List([
        nnx.Linear(din, hidden_dim, use_bias=False, kernel_init=torch_default_uniform(din), **kw)
        for din in dims[:-1]
    ])
    self.norms = nnx.List([
        nnx.BatchNorm(hidden_dim, momentum=0.9, epsilon=1e-5, **kw) for _ in dims[:-1]
    ])
    self.out = nnx.Linear(dims[-1], out_dim, kernel_init=torch_default_uniform(dims[-1]),
                          bias_init=torch_default_uniform(dims[-1]), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps ``(..., in_dim)`` features to ``(..., out_dim)`` float32 features."""
    if x.ndim < 2 or x.shape[-1] != self.in_dim:
      raise ValueError(f"x must have shape (..., {self.in_dim}) with a batch axis, got {x.shape}")
    lead = x.shape[:-1]
    h = x.reshape(-1, self.in_dim)
    for layer, norm in zip(self.hidden, self.norms):
      h = nnx.relu(norm(layer(h)))
    return self.out(h).reshape(*lead, self.out_dim).astype(jnp.float32)


class FeatureStatistics(nnx.Variable):
  """Fixed statistics of a module's inputs: not an ``nnx.Param``, so no optimiser updates them
  (the train state keeps them with the BatchNorm statistics), yet they are checkpointed, restored
  and exported with the module."""


class LinearClassifier(nnx.Module):
  """Linear map from pooled features to class logits (linear probing and fine-tuning).

  Weights start at N(0, 0.01^2) and biases at zero, the usual linear-probe initialisation
  (MoCo v3, MAE).

  With ``standardize=True`` the features are first standardised with fixed statistics, the
  per-feature mean ``m`` and standard deviation ``s`` of a training split
  (:meth:`set_standardization`; identity until set): ``logits = ((x - m) / s) W + b``, like the
  BatchNorm without affine parameters that MAE (He et al., CVPR 2022, Sec. A.2) puts before its
  linear-probe head, but with statistics held fixed rather than tracked. Fine-tuning uses it to
  start from a linear probe (LP-FT, Kumar et al., ICLR 2022): pooled features of a pretrained
  encoder can vary little between images compared with their mean, which a head reading raw
  features barely sees. A feature whose training standard deviation is at most
  ``STD_FLOOR * (1 + |m|)`` (constant up to float32 rounding) is centred only (``s`` taken as 1).
  :meth:`affine` gives the same head as one affine map of the raw features (for class activation
  maps and export).

  With ``track_mean=True`` as well, the head centres a training batch on its own mean and moves
  ``m`` towards it (``m <- momentum m + (1 - momentum) batch mean``, BatchNorm's running average);
  in evaluation mode (``head.eval()``, the default) it reads ``m``. Fine-tuning needs it when the
  pooled features vary little between images compared with their mean: a head fitted to their
  small between-image variation weighs a change of the mean that every image shares (what an
  encoder update mostly moves) as heavily, and its logits then swing for every image alike.
  ``s`` stays fixed.

  With ``whiten=True`` as well, the linear map reads the standardised features through a fixed
  ``(in_dim, in_dim)`` projection ``P`` (:meth:`set_projection`; identity until set):
  ``logits = ((x - m) / s) P W + b``. Fine-tuning sets ``P`` to the whitening its linear-probe
  stage was trained under and ``W`` to that probe's weights, so the optimiser keeps updating the
  head in the coordinates where every direction of the features has unit variance (on nearly
  collinear features, steps on ``W`` of the standardised features barely move the directions that
  tell images apart).
  """

  #: Relative floor under which a feature counts as constant (centred, not scaled).
  STD_FLOOR = 1e-6

  def __init__(self, in_dim: int, num_classes: int, *, standardize: bool = False,
               track_mean: bool = False, whiten: bool = False, momentum: float = 0.9,
               rngs: nnx.Rngs):
    if in_dim < 1 or num_classes < 1:
      raise ValueError(
          f"in_dim and num_classes must be >= 1, got in_dim={in_dim}, num_classes={num_classes}")
    if track_mean and not standardize:
      raise ValueError("track_mean=True needs standardize=True (it tracks the mean it centres on)")
    if whiten and not standardize:
      raise ValueError("whiten=True needs standardize=True (it projects the standardised "
                       "features)")
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    self.in_dim = in_dim
    self.standardize = standardize
    self.track_mean = track_mean
    self.whiten = whiten
    self.momentum = momentum
    self.use_running_average = True  # nnx's train()/eval() switch; read with track_mean only
    self.linear = nnx.Linear(in_dim, num_classes, kernel_init=normal(0.01),
                             rngs=rngs)
    if standardize:
      self.feature_mean = FeatureStatistics(jnp.zeros((in_dim,), jnp.float32))
      self.feature_std = FeatureStatistics(jnp.ones((in_dim,), jnp.float32))
    if whiten:
      self.feature_projection = FeatureStatistics(jnp.eye(in_dim, dtype=jnp.float32))

  def set_standardization(self, mean, std) -> None:
    """Sets the fixed statistics: ``(in_dim,)`` per-feature mean and standard deviation.

    Raises:
      ValueError: the head does not standardise, or ``mean``/``std`` are not finite ``(in_dim,)``
        arrays with ``std >= 0``.
    """
    if not self.standardize:
      raise ValueError("this LinearClassifier was built with standardize=False")
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    for name, value in (("mean", mean), ("std", std)):
      if value.shape != (self.in_dim,) or not bool(jnp.isfinite(value).all()):
        raise ValueError(f"{name} must be a finite ({self.in_dim},) array, got shape "
                         f"{value.shape}")
    if bool((std < 0).any()):
      raise ValueError("std must be >= 0")
    self.feature_mean.set_value(mean)
    self.feature_std.set_value(std)

  def set_projection(self, projection) -> None:
    """Sets the fixed projection of a whitening head: an ``(in_dim, r)`` matrix, ``r <= in_dim``,
    zero-padded to ``(in_dim, in_dim)`` (the padded outputs are constant zero).

    Raises:
      ValueError: the head does not whiten, or ``projection`` is not a finite ``(in_dim, r)``
        array with ``1 <= r <= in_dim``.
    """
    if not self.whiten:
      raise ValueError("this LinearClassifier was built with whiten=False")
    projection = jnp.asarray(projection, jnp.float32)
    if (projection.ndim != 2 or projection.shape[0] != self.in_dim
        or not 1 <= projection.shape[1] <= self.in_dim
        or not bool(jnp.isfinite(projection).all())):
      raise ValueError(f"projection must be a finite ({self.in_dim}, r) array with 1 <= r <= "
                       f"{self.in_dim}, got shape {projection.shape}")
    padded = jnp.zeros((self.in_dim, self.in_dim), jnp.float32)
    self.feature_projection.set_value(padded.at[:, :projection.shape[1]].set(projection))

  def _mean_and_scale(self) -> tuple[jax.Array, jax.Array]:
    mean, std = self.feature_mean[...], self.feature_std[...]
    constant = std <= self.STD_FLOOR * (1.0 + jnp.abs(mean))
    return mean, jnp.where(constant, 1.0, std)

  def standardize_features(self, features: jax.Array) -> jax.Array:
    """The head's input as its linear map reads it: standardised, or unchanged without
    standardisation."""
    features = jnp.asarray(features, jnp.float32)
    if not self.standardize:
      return features
    mean, scale = self._mean_and_scale()
    if self.track_mean and not self.use_running_average:
      batch_mean = features.mean(0)
      self.feature_mean[...] = (self.momentum * self.feature_mean[...]
                                + (1.0 - self.momentum) * jax.lax.stop_gradient(batch_mean))
      mean = batch_mean
    standardized = (features - mean) / scale
    if self.whiten:
      return standardized @ self.feature_projection[...]
    return standardized

  def affine(self) -> tuple[jax.Array, jax.Array]:
    """``(kernel (in_dim, K), bias (K,))`` with ``logits = features @ kernel + bias`` on the raw
    features: ``W / s`` and ``b - (m / s) W`` (``W`` and ``b`` themselves without
    standardisation; ``P W`` for ``W`` with a projection)."""
    kernel, bias = self.linear.kernel[...], self.linear.bias[...]
    if not self.standardize:
      return kernel, bias
    if self.whiten:
      kernel = self.feature_projection[...] @ kernel
    mean, scale = self._mean_and_scale()
    folded = kernel / scale[:, None]
    return folded, bias - mean @ folded

  def __call__(self, features: jax.Array) -> jax.Array:
    """Maps ``(B, in_dim)`` features to ``(B, num_classes)`` float32 logits."""
    if features.ndim != 2 or features.shape[-1] != self.in_dim:
      raise ValueError(f"features must have shape (B, {self.in_dim}), got {features.shape}")
    return self.linear(self.standardize_features(features))
