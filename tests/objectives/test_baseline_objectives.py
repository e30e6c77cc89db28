"""Baseline objectives (SimCLR, BYOL, Barlow Twins, VICReg, VICRegL) against plain-numpy
implementations of their published formulas, written here with loops."""

import dataclasses
import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from otcxr_jax.data import augment
from otcxr_jax.objectives import barlow_twins, byol, registry, simclr, vicreg, vicregl
from otcxr_jax.training import sharding as sharding_lib


def _rand(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _jit(fn, **kwargs):
  return jax.jit(functools.partial(fn, **kwargs))


def _value_and_grads(fn, *args, **kwargs):
  """``(loss, metrics)`` of ``fn(*args, **kwargs)`` and its gradients, from one compilation;
  asserts that the gradient with respect to every argument is finite and not identically 0."""
  run = jax.jit(jax.value_and_grad(functools.partial(fn, **kwargs), has_aux=True,
                                   argnums=tuple(range(len(args)))))
  (loss, metrics), grads = run(*args)
  for i, g in enumerate(grads):
    assert np.all(np.isfinite(g)) and np.any(g != 0), f"gradient of argument {i}"
  assert loss.dtype == jnp.float32
  return loss, metrics


def _cos(a, b):
  return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------- numpy references (float64)


def np_nt_xent(z_s, z_t, tau):
  u = np.concatenate([z_s, z_t]).astype(np.float64)
  n, b = len(u), len(z_s)
  losses, hits = [], []
  for i in range(n):
    pos = (i + b) % n
    sims = {k: _cos(u[i], u[k]) / tau for k in range(n) if k != i}
    losses.append(-sims[pos] + math.log(sum(math.exp(s) for s in sims.values())))
    hits.append(max(sims, key=sims.get) == pos)
  return np.mean(losses), np.mean(hits)


def np_byol(p_s, p_t, z_s, z_t):
  return np.mean([(2 - 2 * _cos(p_s[b], z_t[b])) + (2 - 2 * _cos(p_t[b], z_s[b]))
                  for b in range(len(p_s))])


def np_barlow(z_s, z_t, lam, eps):
  n, d = z_s.shape
  a = (z_s - z_s.mean(0)) / np.sqrt(z_s.var(0) + eps)
  b = (z_t - z_t.mean(0)) / np.sqrt(z_t.var(0) + eps)
  loss = 0.0
  for i in range(d):
    for j in range(d):
      c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
      loss += (1 - c_ij) ** 2 if i == j else lam * c_ij**2
  return loss


def np_var(x, gamma=1.0, eps=1e-4):
  """v(X) of an (N, D) sample: mean_d relu(gamma - sqrt(unbiased var + eps))."""
  return np.mean([max(0.0, gamma - math.sqrt(np.var(x[:, d], ddof=1) + eps))
                  for d in range(x.shape[1])])


def np_cov(x):
  """c(X) of an (N, D) sample: off-diagonal squared covariances / D."""
  c = np.cov(x, rowvar=False)
  d = x.shape[1]
  return sum(c[i, j]**2 for i in range(d) for j in range(d) if i != j) / d


def np_vicreg(z_s, z_t, lam=25.0, mu=25.0, nu=1.0):
  inv = np.mean((z_s - z_t) ** 2)
  return lam * inv + mu * (np_var(z_s) + np_var(z_t)) + nu * (np_cov(z_s) + np_cov(z_t))


def np_nn_matches(x_a, x_b, k):
  """Per image: each cell of a -> nearest cell of b; keep the k closest pairs, raster order."""
  pairs = []
  for a, b in zip(x_a, x_b):
    dist = np.array([[np.linalg.norm(a[i] - b[j]) for j in range(len(b))] for i in range(len(a))])
    nearest = dist.argmin(1)
    keep = np.sort(np.argsort(dist.min(1), kind="stable")[:k])
    pairs.append((keep, nearest[keep]))
  return pairs


def np_pair_criterion(x, y, lam=25.0, mu=25.0, nu=1.0):
  """VICRegL's l(X, Y) on (B, M, D) matched features: per-slot batch statistics."""
  m = x.shape[1]
  var = 0.5 * (np.mean([np_var(x[:, s]) for s in range(m)])
               + np.mean([np_var(y[:, s]) for s in range(m)]))
  cov = 0.5 * (np.mean([np_cov(x[:, s]) for s in range(m)])
               + np.mean([np_cov(y[:, s]) for s in range(m)]))
  return lam * np.mean((x - y) ** 2) + mu * var + nu * cov


def np_vicregl(z_s, z_t, maps_s, maps_t, location_pairs, feature_counts, alpha=0.75):
  """``location_pairs`` = (pairs s->t, pairs t->s), each a list of (query, match) per image."""
  def matched(pairs_st, pairs_ts):
    total = 0.0
    for pairs, qm, mm in ((pairs_st, maps_s, maps_t), (pairs_ts, maps_t, maps_s)):
      x = np.stack([qm[b][q] for b, (q, _) in enumerate(pairs)])
      y = np.stack([mm[b][m] for b, (_, m) in enumerate(pairs)])
      total += 0.5 * np_pair_criterion(x, y)
    return total

  feature_pairs = (np_nn_matches(maps_s, maps_t, feature_counts[0]),
                   np_nn_matches(maps_t, maps_s, feature_counts[1]))
  local = matched(*location_pairs) + matched(*feature_pairs)
  glob = np_pair_criterion(z_s[:, None], z_t[:, None])
  return alpha * glob + (1 - alpha) * local


# ---------------------------------------------------------------- SimCLR


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_numpy(tau):
  z_s, z_t = _rand(0, 6, 5), _rand(1, 6, 5)
  z_t[:3] = z_s[:3] + 0.1 * z_t[:3]  # some positives are easy, so accuracy is neither 0 nor 1
  loss, metrics = _value_and_grads(simclr.nt_xent_loss, z_s, z_t, temperature=tau)
  want_loss, want_acc = np_nt_xent(z_s, z_t, tau)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], want_acc)


def test_nt_xent_negatives_span_the_sharded_global_batch():
  sharding = sharding_lib.batch_sharded(sharding_lib.make_mesh())
  assert sharding.mesh.devices.size == 4
  z_s, z_t = _rand(2, 8, 4), _rand(3, 8, 4)
  args = [jax.device_put(z, sharding) for z in (z_s, z_t)]
  loss, _ = _jit(simclr.nt_xent_loss)(*args)
  np.testing.assert_allclose(loss, np_nt_xent(z_s, z_t, 0.1)[0], rtol=1e-5)


# ---------------------------------------------------------------- BYOL


def test_byol_loss_matches_numpy_and_stops_target_gradients():
  p_s, p_t, z_s, z_t = (_rand(i, 5, 4) for i in range(4))
  loss, metrics = jax.jit(byol.byol_loss)(p_s, p_t, z_s, z_t)
  np.testing.assert_allclose(loss, np_byol(p_s, p_t, z_s, z_t), rtol=1e-5)
  mean_cos = np.mean([_cos(p_s[b], z_t[b]) + _cos(p_t[b], z_s[b]) for b in range(5)]) / 2
  np.testing.assert_allclose(metrics["cosine"], mean_cos, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda *a: byol.byol_loss(*a)[0], argnums=(0, 1, 2, 3)))(p_s, p_t,
                                                                                    z_s, z_t)
  assert np.all(np.abs(grads[0]) > 0) and np.all(np.abs(grads[1]) > 0)
  assert np.all(grads[2] == 0) and np.all(grads[3] == 0)


def test_ema_update_by_hand():
  target = {"w": jnp.array([1.0, 2.0]), "sub": {"b": jnp.array(3.0, jnp.bfloat16)}}
  online = {"w": jnp.array([3.0, -2.0]), "sub": {"b": jnp.array(5.0, jnp.bfloat16)}}
  new = jax.jit(byol.ema_update)(target, online, 0.75)
  # 0.75 * 1 + 0.25 * 3 = 1.5; 0.75 * 2 + 0.25 * -2 = 1.0; 0.75 * 3 + 0.25 * 5 = 3.5
  np.testing.assert_allclose(new["w"], [1.5, 1.0])
  assert new["sub"]["b"].dtype == jnp.bfloat16 and float(new["sub"]["b"]) == 3.5
  with pytest.raises(ValueError, match="tree structure"):
    byol.ema_update(target, {"w": online["w"]}, 0.5)


def test_byol_tau_schedule():
  k_total, base = 1000, 0.99
  tau = jax.jit(byol.byol_tau, static_argnums=(1, 2))
  np.testing.assert_allclose(tau(0, k_total, base), base, rtol=1e-6)
  np.testing.assert_allclose(tau(k_total // 2, k_total, base), (1 + base) / 2, rtol=1e-6)
  np.testing.assert_allclose(tau(k_total, k_total, base), 1.0, rtol=1e-6)
  np.testing.assert_allclose(tau(250, k_total, base),
                             1 - (1 - base) * (math.cos(math.pi / 4) + 1) / 2, rtol=1e-6)
  np.testing.assert_allclose(tau(2 * k_total, k_total, base), 1.0, rtol=1e-6)  # clipped at K


# ---------------------------------------------------------------- Barlow Twins and VICReg


def test_barlow_twins_matches_numpy():
  z_s, z_t = _rand(4, 7, 4), _rand(5, 7, 4)
  z_t[:, 0] += 2 * z_s[:, 0]  # one strongly correlated pair of dimensions
  for lam in (5e-3, 0.5):
    loss, metrics = _value_and_grads(barlow_twins.barlow_twins_loss, z_s, z_t,
                                     lambda_offdiag=lam)
    np.testing.assert_allclose(loss, np_barlow(z_s, z_t, lam, 1e-5), rtol=1e-5)
    np.testing.assert_allclose(loss, metrics["on_diagonal"] + lam * metrics["off_diagonal"],
                               rtol=1e-6)


def test_vicreg_matches_numpy():
  z_s, z_t = 0.5 * _rand(6, 8, 5), _rand(7, 8, 5)  # z_s below the unit-std target
  loss, metrics = _value_and_grads(vicreg.vicreg_loss, z_s, z_t)
  np.testing.assert_allclose(loss, np_vicreg(z_s, z_t), rtol=1e-5)
  np.testing.assert_allclose(metrics["variance"], np_var(z_s) + np_var(z_t), rtol=1e-5)
  loss2, _ = _jit(vicreg.vicreg_loss, sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0)(z_s, z_t)
  np.testing.assert_allclose(loss2, np_vicreg(z_s, z_t, 1.0, 2.0, 3.0), rtol=1e-5)


# ---------------------------------------------------------------- VICRegL


def test_vicregl_matches_numpy_on_random_maps():
  b, ns, nt, d = 4, 9, 7, 3
  z_s, z_t = _rand(8, b, 5), _rand(9, b, 5)
  maps_s, maps_t = _rand(10, b, ns, d), _rand(11, b, nt, d)
  pos_s, pos_t = _rand(12, b, ns, 2), _rand(13, b, nt, 2)
  counts, feature_counts = (5, 3), (6, 4)
  loss, metrics = _value_and_grads(
      lambda *a: vicregl.vicregl_loss(*a, pos_s, pos_t, num_matches=counts,
                                      num_feature_matches=feature_counts),
      z_s, z_t, maps_s, maps_t)
  location_pairs = (np_nn_matches(pos_s, pos_t, counts[0]),
                    np_nn_matches(pos_t, pos_s, counts[1]))
  want = np_vicregl(z_s, z_t, maps_s, maps_t, location_pairs, feature_counts)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.75 * metrics["global"] + 0.25 * metrics["local"],
                             rtol=1e-6)
  np.testing.assert_allclose(
      metrics["local"], 25 * metrics["local_invariance"] + 25 * metrics["local_variance"]
      + metrics["local_covariance"], rtol=1e-6)


def _grid_positions(boxes):
  """(B, 16, 2) source positions of 4x4 grids of unrotated crops ``boxes`` (B, 4)."""
  pos = augment.positions_in_source(jnp.asarray(boxes, jnp.float32), 0.0, (4, 4))
  return np.asarray(pos).reshape(len(boxes), 16, 2)


def test_vicregl_location_matching_on_crops_with_known_overlap():
  # 4x4 grids of cells 0.2 wide. Image 0: view t is view s shifted by one cell down and right,
  # image 1: the reverse shift. Either way the views share a 3x3 block of cells.
  box_a, box_b = [0.0, 0.0, 0.8, 0.8], [0.2, 0.2, 1.0, 1.0]
  pos = _grid_positions([box_a, box_b, box_b, box_a])
  pos_s, pos_t = pos[:2], pos[2:]
  cells = [(r, c) for r in range(4) for c in range(4)]
  shifted = [4 * r + c for r, c in cells if r >= 1 and c >= 1]
  unshifted = [4 * r + c for r, c in cells if r <= 2 and c <= 2]
  # s -> t: image 0 pairs s(r, c) with t(r-1, c-1); image 1 pairs s(r, c) with t(r+1, c+1).
  st = [(np.array(shifted), np.array(shifted) - 5), (np.array(unshifted), np.array(unshifted) + 5)]
  ts = [(np.array(unshifted), np.array(unshifted) + 5), (np.array(shifted), np.array(shifted) - 5)]

  sq_dist = np.sum((pos_s[:, :, None] - pos_t[:, None]) ** 2, axis=-1)
  for dist, want in ((sq_dist, st), (np.swapaxes(sq_dist, 1, 2), ts)):
    query, match = _jit(vicregl.nearest_neighbor_matches, num_matches=9)(dist)
    for b in range(2):
      np.testing.assert_array_equal(query[b], want[b][0])
      np.testing.assert_array_equal(match[b], want[b][1])

  z_s, z_t = _rand(14, 2, 6), _rand(15, 2, 6)
  maps_s, maps_t = _rand(16, 2, 16, 3), _rand(17, 2, 16, 3)
  loss, _ = _jit(vicregl.vicregl_loss, num_matches=(9, 9))(z_s, z_t, maps_s, maps_t, pos_s,
                                                          pos_t)
  np.testing.assert_allclose(loss, np_vicregl(z_s, z_t, maps_s, maps_t, (st, ts), (16, 16)),
                             rtol=1e-5)


# ---------------------------------------------------------------- shared properties


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_zero_embeddings_give_finite_gradients(name):
  z = _rand(20, 4, 5)
  z[0] = 0.0  # the L2 normalisation must not divide by zero
  other = _rand(21, 4, 5)

  def loss(x):
    if name == "simclr":
      return simclr.nt_xent_loss(x, other)[0]
    return byol.byol_loss(x, x, other, other)[0]

  grad = jax.jit(jax.grad(loss))(z)
  assert np.all(np.isfinite(grad)) and np.any(grad[1:] != 0)


@pytest.mark.parametrize("cls, field, value", [
    (simclr.SimCLRConfig, "temperature", 0.0),
    (simclr.SimCLRConfig, "temperature", float("inf")),
    (byol.BYOLConfig, "base_tau", 1.5),
    (barlow_twins.BarlowTwinsConfig, "lambda_offdiag", -1e-3),
    (barlow_twins.BarlowTwinsConfig, "eps", 0.0),
    (vicreg.VICRegConfig, "std_coeff", -1.0),
    (vicreg.VICRegConfig, "gamma", 0.0),
    (vicreg.VICRegConfig, "eps", float("nan")),
    (vicreg.VICRegConfig, "sim_coeff", "25"),
    (vicregl.VICRegLConfig, "alpha", 1.2),
    (vicregl.VICRegLConfig, "cov_coeff", True),
    (vicregl.VICRegLConfig, "num_matches", (20,)),
    (vicregl.VICRegLConfig, "num_matches", (0, 4)),
    (vicregl.VICRegLConfig, "num_feature_matches", (3, 2.5)),
])
def test_configs_reject_bad_fields(cls, field, value):
  with pytest.raises(ValueError, match=f"{cls.__name__}.{field}"):
    cls(**{field: value})


def test_losses_reject_bad_arguments():
  z = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match="temperature"):
    simclr.nt_xent_loss(z, z, temperature=-1.0)
  with pytest.raises(ValueError, match="z_s and z_t"):
    vicreg.vicreg_loss(z, z[:3])
  with pytest.raises(ValueError, match="at least 2"):
    barlow_twins.barlow_twins_loss(z[:1], z[:1])
  with pytest.raises(ValueError, match="total_steps"):
    byol.byol_tau(0, 0)
  maps, pos = np.ones((4, 9, 3), np.float32), np.ones((4, 9, 2), np.float32)
  with pytest.raises(ValueError, match="num_matches"):
    vicregl.vicregl_loss(z, z, maps, maps, pos, pos)  # default (20, 4) > 9 cells
  with pytest.raises(ValueError, match="pos_t"):
    vicregl.vicregl_loss(z, z, maps, maps, pos, pos[:, :4], num_matches=(4, 4))


BASELINES = {name: entry for name, entry in registry.OBJECTIVES.items() if name != "otcxr"}


def test_registry_configs_are_the_papers_and_match_their_losses():
  assert tuple(registry.OBJECTIVES) == ("otcxr", "simclr", "byol", "barlow_twins", "vicreg",
                                        "vicregl")
  defaults = {name: dataclasses.asdict(entry.config()) for name, entry in BASELINES.items()}
  assert defaults["simclr"] == {"temperature": 0.1}
  assert defaults["byol"] == {"base_tau": 0.996}
  assert defaults["barlow_twins"]["lambda_offdiag"] == 5e-3
  assert defaults["vicreg"] == {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0,
                                "gamma": 1.0, "eps": 1e-4}
  assert defaults["vicregl"] == {**defaults["vicreg"], "alpha": 0.75, "num_matches": (20, 4),
                                 "num_feature_matches": None}
  # Each config's fields are its loss's keyword arguments, defaults included (BYOL's: byol_tau's).
  for name, (_, loss_fn) in BASELINES.items():
    fn = byol.byol_tau if name == "byol" else loss_fn
    params = inspect.signature(fn).parameters.values()
    keywords = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    assert keywords == defaults[name], name
