"""Target networks: BYOL's EMA update through the real train step, checkpoints, misuse."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from otcxr_jax import methods
from otcxr_jax.data import pipeline
from otcxr_jax.models import target as target_lib
from otcxr_jax.training import loop, optim, sharding
from otcxr_jax.training import state as state_lib
from tests.tiny import tiny_config


def _pure(state):
  return jax.tree.leaves(nnx.to_pure_dict(state))


def _target_and_online(graphdef, state, name):
  """(target ξ, online θ) leaves of the module ``name`` of a SiameseModel state."""
  model = state_lib.merge_model(graphdef, state.params, state.model_state)
  return (_pure(nnx.state(getattr(model.target, name), target_lib.TargetParam)),
          _pure(nnx.state(getattr(model, name), nnx.Param)))


# BYOL's target, and OTCXR's teacher (objective.teacher_tau): EMA copies of these modules.
_TARGETS = {"byol": ("encoder", "projector"), "otcxr": ("encoder", "global_projector")}


@pytest.mark.parametrize("method", sorted(_TARGETS))
def test_target_follows_the_ema_schedule_through_the_train_step(tmp_path, method):
  config = tiny_config(tmp_path)
  config.method = method
  config.byol.base_tau = 0.9
  if method == "otcxr":
    config.objective.teacher_tau, config.objective.global_weight = 0.9, 1.0
  names = _TARGETS[method]
  config.train.num_steps = 4
  config.optim.name = "sgd"
  config.optim.base_learning_rate = 5.0
  config.optim.warmup_steps = 0
  # The schedule applies to every target variable alike: one stage at 16x16 compiles in half
  # the time of the tiny config's four at 32x32.
  config.model.num_stages = 1
  config.data.image_size = 16
  model = methods.build_model(config, nnx.Rngs(0))
  tx, _ = optim.pretraining_optimizer(config)
  graphdef, state = state_lib.create_train_state(model, tx, jax.random.key_data(jax.random.key(1)))
  assert "target" not in state.params  # not trained: no gradient, no optimiser state
  for name in names:  # the target starts as a copy of the online network
    for xi, theta in zip(*_target_and_online(graphdef, state, name)):
      np.testing.assert_array_equal(xi, theta)
  step = jax.jit(state_lib.make_train_step(graphdef, methods.make_loss_fn(config), tx,
                                           target_decay=methods.target_decay(config)))
  images = np.random.RandomState(0).randint(0, 256, (8, 16, 16, 1)).astype(np.uint8)
  predictor = _pure(state.params["predictor"])
  state, _ = step(state, {"image": images})  # step k = 0: target and online now differ
  assert all(not np.array_equal(a, b) for a, b in zip(predictor, _pure(state.params["predictor"])))
  before = {name: _target_and_online(graphdef, state, name)[0] for name in names}
  state, metrics = step(state, {"image": images})  # step k = 1
  # τ(1) = 1 - (1 - τ_base) (cos(π k / K) + 1) / 2 with k = 1, K = 4, τ_base = 0.9.
  tau = 1.0 - 0.1 * (math.cos(math.pi / 4) + 1.0) / 2.0
  np.testing.assert_allclose(metrics["target_decay"], tau, rtol=1e-6)
  moved = 0.0
  for name in names:
    after, online = _target_and_online(graphdef, state, name)
    for xi_old, xi_new, theta in zip(before[name], after, online):
      np.testing.assert_allclose(xi_new, tau * xi_old + (1.0 - tau) * theta, rtol=1e-5,
                                 atol=1e-6)
      moved = max(moved, float(np.max(np.abs(xi_new - xi_old))))
  assert moved > 1e-4  # the check above is not satisfied by a target that stood still


class _WithTarget(nnx.Module):
  """Linear -> BatchNorm -> Linear online network whose loss also reads a target copy."""

  def __init__(self, rngs):
    self.net = nnx.Sequential(nnx.Linear(6, 8, rngs=rngs), nnx.BatchNorm(8, rngs=rngs),
                              nnx.Linear(8, 1, rngs=rngs))
    self.target = target_lib.EMATarget(net=self.net)

  def __call__(self, x):
    return self.net(x), jax.lax.stop_gradient(self.target.net(x))


def _loss(model, batch, rng):
  del rng
  online, target = model(batch["x"])
  loss = jnp.mean((online[:, 0] - batch["y"]) ** 2 + (online - target) ** 2)
  return loss, {}


def _source(n=32):
  x = np.random.RandomState(0).randn(n, 6).astype(np.float32)
  return [{"x": x[i], "y": np.float32(x[i].sum())} for i in range(n)]


def _run(workdir, num_steps):
  batches = pipeline.train_iterator(_source(), global_batch_size=8, seed=0,
                                    transform=pipeline.select_keys(["x", "y"]))
  tx = optim.make_optimizer("sgd", schedule=optim.make_schedule(peak=0.1, total_steps=4,
                                                                warmup_steps=0),
                            weight_decay=0.0)
  cfg = loop.LoopConfig(num_steps=num_steps, log_every=1, checkpoint_every=100,
                        tensorboard=False)
  return loop.run(name="toy", workdir=workdir, model=_WithTarget(nnx.Rngs(0)), loss_fn=_loss,
                  tx=tx, batches=batches, global_batch_size=8, config=cfg,
                  rng=jax.random.key_data(jax.random.key(0)),
                  mesh=sharding.make_mesh(jax.devices()[:1]),
                  target_decay=lambda step: 0.5 + 0.1 * step)


def test_resumed_run_restores_the_target_exactly(tmp_path):
  full = _run(tmp_path / "full", 4)
  _run(tmp_path / "split", 2)
  resumed = _run(tmp_path / "split", 4)
  assert resumed.resumed_from == 2
  targets = [_pure(nnx.state(r.model().target, target_lib.TargetParam)) for r in (full, resumed)]
  for a, b in zip(*targets):
    np.testing.assert_array_equal(a, b)
  initial = _pure(nnx.state(_WithTarget(nnx.Rngs(0)).target, target_lib.TargetParam))
  assert any(not np.array_equal(a, b) for a, b in zip(targets[0], initial))


def test_target_decay_is_required_exactly_with_a_target(tmp_path):
  batches = pipeline.train_iterator(_source(), global_batch_size=8, seed=0,
                                    transform=pipeline.select_keys(["x", "y"]))
  tx = optim.make_optimizer("sgd", schedule=optim.make_schedule(peak=0.1, total_steps=4,
                                                                warmup_steps=0),
                            weight_decay=0.0)
  cfg = loop.LoopConfig(num_steps=1, tensorboard=False)
  common = dict(workdir=tmp_path, loss_fn=_loss, tx=tx, batches=batches, global_batch_size=8,
                config=cfg, rng=jax.random.key_data(jax.random.key(0)))
  with pytest.raises(ValueError, match="has a target network but target_decay is None"):
    loop.run(name="a", model=_WithTarget(nnx.Rngs(0)), **common)
  with pytest.raises(ValueError, match="has no target network but target_decay is given"):
    loop.run(name="b", model=nnx.Linear(6, 1, rngs=nnx.Rngs(0)), target_decay=lambda s: 0.5,
             **common)


def test_a_target_of_a_missing_module_is_refused():
  class Orphan(nnx.Module):
    def __init__(self):
      self.target = target_lib.EMATarget(net=nnx.Linear(2, 2, rngs=nnx.Rngs(0)))

  with pytest.raises(ValueError, match="has no module 'net'"):
    target_lib.target_pairs(Orphan())
