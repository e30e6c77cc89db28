"""OTCXR pretraining: the train step is device-count invariant and keeps float32 parameters
under bfloat16 compute (the runs are in tests/e2e/test_pretrain_runs.py)."""

import jax
import numpy as np
import pytest
from flax import nnx

from otcxr_jax import methods
from otcxr_jax.training import optim
from otcxr_jax.training import sharding, state as state_lib
from tests.tiny import tiny_config


def _steps(config, devices, images, num_steps=1):
  """Parameters before and after ``num_steps`` train steps, and the last step's metrics."""
  mesh = sharding.make_mesh(devices)
  model = methods.build_model(config, nnx.Rngs(0))
  tx, _ = optim.pretraining_optimizer(config)
  graphdef, state = state_lib.create_train_state(model, tx, jax.random.key_data(jax.random.key(1)))
  before = jax.device_get(state.params)
  state = sharding.replicate(state, mesh)
  step = jax.jit(state_lib.make_train_step(graphdef, methods.make_loss_fn(config), tx),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)))
  metrics = None
  for _ in range(num_steps):
    state, metrics = step(state, sharding.to_global({"image": images}, mesh))
  return before, jax.device_get(state.params), jax.device_get(metrics)


def _norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree))))


@pytest.mark.slow  # compiles the ResNet train step for one and for four devices
def test_otcxr_step_on_four_devices_matches_one(tmp_path):
  config = tiny_config(tmp_path)
  config.optim.name = "sgd"
  config.optim.base_learning_rate = 0.5
  config.objective.num_iters = 30
  config.optim.warmup_steps = 0  # the first step must move the parameters
  images = np.random.RandomState(0).randint(0, 256, (8, 32, 32, 1)).astype(np.uint8)
  before, params_1, metrics_1 = _steps(config, jax.devices()[:1], images)
  _, params_4, metrics_4 = _steps(config, jax.devices()[:4], images)
  for key in ("loss", "ot", "var", "cov", "plan_entropy"):
    np.testing.assert_allclose(metrics_1[key], metrics_4[key], rtol=1e-5, atol=1e-7)
  # Parameters: the two runs' updates agree to float32 reduction-order noise (global-batch
  # BatchNorm and var/cov statistics; per-device statistics would differ by orders more).
  update = jax.tree.map(lambda a, b: a - b, params_1, before)
  diff = jax.tree.map(lambda a, b: a - b, params_1, params_4)
  assert _norm(diff) < 1e-4 * _norm(update), (_norm(diff), _norm(update))


@pytest.mark.slow  # compiles the train step in bfloat16
def test_bfloat16_compute_keeps_float32_params(tmp_path):
  config = tiny_config(tmp_path)
  config.train.compute_dtype = "bfloat16"
  images = np.random.RandomState(0).randint(0, 256, (8, 32, 32, 1)).astype(np.uint8)
  _, params, metrics = _steps(config, jax.devices()[:1], images)
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  assert np.isfinite(metrics["loss"])
