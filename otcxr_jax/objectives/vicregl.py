"""VICRegL: VICReg on global embeddings plus VICReg on matched local features.

Bardes, Ponce, LeCun, "VICRegL: Self-Supervised Learning of Local Visual Features", NeurIPS 2022,
arXiv 2210.01571, Sec. 3. The paper states the local criterion schematically; the weighting of
every term below follows the authors' implementation (facebookresearch/VICRegL,
``main_vicregl.py``: ``_vicreg_loss``, ``_local_loss``, ``global_loss``) in its default setting
(``l2_all_matches=1``, ``fast_vc_reg=0``) for two views.

Notation. For ``(B, D)`` features: ``s(X, Y)`` = mean squared error, ``v`` and ``c`` = VICReg's
variance hinge and covariance penalty (`regularizers.variance_loss`, `regularizers.covariance_loss`)
with statistics over the batch. For matched
local features ``X, Y`` of shape ``(B, M, D)`` (``M`` match slots),
``v̄(X) = (1/M) Σ_m v(X_{:,m,:})`` and likewise ``c̄``: the statistics of each slot are taken over
the batch. The VICRegL pair criterion, with λ, μ, ν = ``sim_coeff, std_coeff, cov_coeff``, is::

  ℓ(X, Y) = λ s(X, Y) + μ [v̄(X) + v̄(Y)] / 2 + ν [c̄(X) + c̄(Y)] / 2.

Matching. Given distances ``d(i, j)`` from every cell ``i`` of view a to every cell ``j`` of
view b, each cell ``i`` is paired with its nearest neighbour ``NN(i) = argmin_j d(i, j)``, and
the ``k`` cells with the smallest ``d(i, NN(i))`` are kept (the paper's top-γ filtering), in
raster order of ``i``. Location-based matching uses the distance between the cells' positions in
the source image; feature-based matching the L2 distance between the features.

Loss. With ``(X_a→b, Y_a→b)`` the features of view a's kept cells and of their matches in b::

  L_local = Σ_{matching ∈ {location, feature}} ½ ℓ(X_s→t, Y_s→t) + ½ ℓ(X_t→s, Y_t→s)
  L_global = ℓ(z_s, z_t)   (on the (B, D) pooled embeddings, M = 1)
  L = α L_global + (1 - α) L_local

Location matching keeps ``num_matches = (k_s→t, k_t→s)`` cells, ``(20, 4)`` by default (the
reference's ``--num_matches``; with 7x7 maps, 20 of 49 cells one way and 4 the other); feature
matching keeps every cell (``num_feature_matches=None``, the reference's ``l2_all_matches=1``).
α = 0.75 is the reference's default, used in its ResNet-50 commands. The reference's multi-crop
loop keeps only the last view pair's local loss and divides by the number of pairs (half the
local loss for two views); that is not reproduced here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from otcxr_jax.objectives import _baseline_common as common
from otcxr_jax.objectives import regularizers, vicreg


@dataclasses.dataclass(frozen=True)
class VICRegLConfig:
  """Hyperparameters of `vicregl_loss` (its keyword arguments); defaults are the reference's.

  Attributes:
    alpha: α in [0, 1], weight of the global loss (the local one gets 1 - α); 0.75.
    sim_coeff: λ >= 0, weight of the invariance terms (25).
    std_coeff: μ >= 0, weight of the variance terms (25).
    cov_coeff: ν >= 0, weight of the covariance terms (1).
    gamma: target standard deviation of the variance hinge (1); not the paper's top-γ, which is
      ``num_matches``.
    eps: ε > 0 added to the variance before the square root (1e-4).
    num_matches: cells kept by location matching from view s to t and from t to s, (20, 4).
    num_feature_matches: the same for feature matching; None keeps every cell (the default).
  """

  alpha: float = 0.75
  sim_coeff: float = 25.0
  std_coeff: float = 25.0
  cov_coeff: float = 1.0
  gamma: float = 1.0
  eps: float = 1e-4
  num_matches: tuple[int, int] = (20, 4)
  num_feature_matches: tuple[int, int] | None = None

  def __post_init__(self):
    # Lists from a ConfigDict become tuples so the config stays hashable.
    for name in ("num_matches", "num_feature_matches"):
      value = getattr(self, name)
      if isinstance(value, Sequence) and not isinstance(value, str):
        object.__setattr__(self, name, tuple(value))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first field outside its valid range."""
    common.check_number("VICRegLConfig", "alpha", self.alpha, low=0.0, high=1.0)
    vicreg.validate_vicreg_fields(self)
    common.check_match_counts("VICRegLConfig", "num_matches", self.num_matches)
    common.check_match_counts("VICRegLConfig", "num_feature_matches", self.num_feature_matches,
                              allow_none=True)


def nearest_neighbor_matches(distances: jax.Array,
                             num_matches: int) -> tuple[jax.Array, jax.Array]:
  """The ``num_matches`` best nearest-neighbour pairs of each row of a distance matrix.

  For each ``i``, ``NN(i) = argmin_j distances[..., i, j]`` (first index on ties); the
  ``num_matches`` rows with the smallest ``distances[..., i, NN(i)]`` are kept (lower index first
  on ties) and returned in increasing ``i``. Indices carry no gradient.

  Args:
    distances: ``(B, Na, Nb)`` distances, or any monotone function of them.
    num_matches: k with 1 <= k <= Na.

  Returns:
    ``(query, match)``: two ``(B, k)`` int32 arrays, ``match = NN(query)``.
  """
  if distances.ndim != 3:
    raise ValueError(f"distances must be (B, Na, Nb), got shape {distances.shape}.")
  if not 1 <= num_matches <= distances.shape[1]:
    raise ValueError(f"num_matches must be in [1, {distances.shape[1]}] (cells of the query "
                     f"view), got {num_matches}.")
  distances = jax.lax.stop_gradient(distances)
  nearest = jnp.argmin(distances, axis=-1)
  _, query = jax.lax.top_k(-jnp.min(distances, axis=-1), num_matches)
  query = jnp.sort(query, axis=-1)
  return query, jnp.take_along_axis(nearest, query, axis=-1)


def _location_distances(pos_a: jax.Array, pos_b: jax.Array) -> jax.Array:
  """``(B, Na, Nb)`` squared distances between ``(B, Na, 2)`` and ``(B, Nb, 2)`` positions."""
  return jnp.sum(jnp.square(pos_a[:, :, None, :] - pos_b[:, None, :, :]), axis=-1)


def _feature_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """``(B, Na, Nb)`` squared L2 distances between ``(B, Na, C)`` and ``(B, Nb, C)`` features,
  as ``‖a‖² + ‖b‖² - 2 a·b`` (no ``(B, Na, Nb, C)`` intermediate)."""
  a_sq = jnp.sum(jnp.square(a), axis=-1)[:, :, None]
  b_sq = jnp.sum(jnp.square(b), axis=-1)[:, None, :]
  return a_sq + b_sq - 2.0 * jnp.einsum("bic,bjc->bij", a, b)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """Rows ``x[b, index[b, m]]``: ``(B, N, D)``, ``(B, M)`` -> ``(B, M, D)``."""
  return jnp.take_along_axis(x, index[..., None], axis=1)


def _check_inputs(z_s, z_t, maps_s, maps_t, pos_s, pos_t) -> None:
  common.check_pair(z_s, z_t, ("z_s", "z_t"), min_batch=2)
  b = z_s.shape[0]
  for name, x, last in (("maps_s", maps_s, None), ("maps_t", maps_t, None),
                        ("pos_s", pos_s, 2), ("pos_t", pos_t, 2)):
    if x.ndim != 3 or x.shape[0] != b or (last is not None and x.shape[-1] != last):
      want = f"({b}, N, {last})" if last else f"({b}, N, D)"
      raise ValueError(f"{name} must have shape {want}, got {x.shape}.")
  if maps_s.shape[-1] != maps_t.shape[-1]:
    raise ValueError(f"maps_s and maps_t must have the same feature size, got "
                     f"{maps_s.shape[-1]} and {maps_t.shape[-1]}.")
  for view, maps, pos in (("s", maps_s, pos_s), ("t", maps_t, pos_t)):
    if pos.shape[1] != maps.shape[1]:
      raise ValueError(f"pos_{view} must give one position per cell of maps_{view}: "
                       f"{pos.shape[1]} positions for {maps.shape[1]} cells.")


def _check_counts(cfg: VICRegLConfig, cells: tuple[int, int]) -> None:
  for name in ("num_matches", "num_feature_matches"):
    counts = getattr(cfg, name)
    if counts is not None and (counts[0] > cells[0] or counts[1] > cells[1]):
      raise ValueError(f"{name} = {counts} asks for more cells than the views have "
                       f"(Ns, Nt) = {cells}.")


def vicregl_loss(z_s: jax.Array, z_t: jax.Array, maps_s: jax.Array, maps_t: jax.Array,
                 pos_s: jax.Array, pos_t: jax.Array, *, alpha: float = 0.75,
                 sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                 gamma: float = 1.0, eps: float = 1e-4, num_matches: tuple[int, int] = (20, 4),
                 num_feature_matches: tuple[int, int] | None = None,
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """VICRegL loss ``α L_global + (1 - α) L_local`` of the module docstring.

  Args:
    z_s: ``(B, D)`` global (pooled, projected) embeddings of the source views.
    z_t: ``(B, D)`` global embeddings of the target views.
    maps_s: ``(B, Ns, C)`` local features of the source views (flattened dense map).
    maps_t: ``(B, Nt, C)`` local features of the target views.
    pos_s: ``(B, Ns, 2)`` positions of ``maps_s``'s cells in source-image coordinates, e.g.
      `otcxr_jax.data.augment.positions_in_source` of the view's crop box, reshaped.
    pos_t: ``(B, Nt, 2)`` positions of ``maps_t``'s cells, in the same coordinates.
    alpha, sim_coeff, std_coeff, cov_coeff, gamma, eps, num_matches, num_feature_matches: as in
      `VICRegLConfig`.

  Returns:
    ``(loss, metrics)``: the float32 loss and ``{"loss", "global", "local",
    "global_invariance", "global_variance", "global_covariance", "local_invariance",
    "local_variance", "local_covariance"}``. The terms are unweighted, so that
    ``global = λ·global_invariance + μ·global_variance + ν·global_covariance`` and likewise for
    ``local`` (``*_variance`` and ``*_covariance`` include the halves of ℓ).
  """
  cfg = VICRegLConfig(alpha=alpha, sim_coeff=sim_coeff, std_coeff=std_coeff,
                      cov_coeff=cov_coeff, gamma=gamma, eps=eps, num_matches=num_matches,
                      num_feature_matches=num_feature_matches)
  _check_inputs(z_s, z_t, maps_s, maps_t, pos_s, pos_t)
  _check_counts(cfg, (maps_s.shape[1], maps_t.shape[1]))
  z_s, z_t, maps_s, maps_t, pos_s, pos_t = (
      x.astype(jnp.float32) for x in (z_s, z_t, maps_s, maps_t, pos_s, pos_t))

  def per_slot(term, x):
    """Mean over slots m of ``term(x[:, m, :])``, batch statistics per slot."""
    return jnp.mean(jax.vmap(term)(jnp.swapaxes(x, 0, 1)))

  def variance(x):
    return regularizers.variance_loss(x, gamma, eps)

  def pair_terms(x, y):
    """Unweighted (s, [v̄(X) + v̄(Y)] / 2, [c̄(X) + c̄(Y)] / 2) of (B, M, D) pairs."""
    var = 0.5 * (per_slot(variance, x) + per_slot(variance, y))
    cov = 0.5 * (per_slot(regularizers.covariance_loss, x)
                 + per_slot(regularizers.covariance_loss, y))
    return jnp.stack([jnp.mean(jnp.square(x - y)), var, cov])

  def matched_terms(dist_st, counts):
    """½ ℓ-terms of s→t plus ½ ℓ-terms of t→s for one matching (distances s x t)."""
    terms = []
    for dist, query_maps, match_maps, k in ((dist_st, maps_s, maps_t, counts[0]),
                                            (jnp.swapaxes(dist_st, 1, 2), maps_t, maps_s,
                                             counts[1])):
      query, match = nearest_neighbor_matches(dist, k)
      terms.append(pair_terms(_gather(query_maps, query), _gather(match_maps, match)))
    return 0.5 * (terms[0] + terms[1])

  feature_counts = cfg.num_feature_matches or (maps_s.shape[1], maps_t.shape[1])
  local = (matched_terms(_location_distances(pos_s, pos_t), cfg.num_matches)
           + matched_terms(_feature_distances(maps_s, maps_t), feature_counts))
  glob = pair_terms(z_s[:, None, :], z_t[:, None, :])
  weights = jnp.array([sim_coeff, std_coeff, cov_coeff], jnp.float32)
  global_loss, local_loss = jnp.dot(weights, glob), jnp.dot(weights, local)
  loss = alpha * global_loss + (1.0 - alpha) * local_loss
  metrics = {"loss": loss, "global": global_loss, "local": local_loss}
  for scope, terms in (("global", glob), ("local", local)):
    for i, name in enumerate(("invariance", "variance", "covariance")):
      metrics[f"{scope}_{name}"] = terms[i]
  return loss, metrics
