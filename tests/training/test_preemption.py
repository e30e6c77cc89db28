"""Preemption (SIGTERM -> checkpoint, clean exit, exact resumption) and non-finite-loss policies."""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from otcxr_jax.data import pipeline
from otcxr_jax.training import loop, optim, sharding
from otcxr_jax.training import state as state_lib
from tests.training.test_train_loop import _loss, _source, _Tiny

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _batches():
  return pipeline.train_iterator(_source(), global_batch_size=8, seed=3,
                                 transform=pipeline.select_keys(["x", "y"]))


def _optimizer():
  schedule = optim.make_schedule(peak=0.05, total_steps=6, warmup_steps=2)
  return optim.make_optimizer("lars", schedule=schedule, weight_decay=1e-4)


def _rng():
  return jax.random.key_data(jax.random.key(1))


def run_toy(workdir, num_steps, *, loss_fn=_loss, devices=None, log_every=1, step_delay=0.0,
            on_nonfinite="stop"):
  """The toy run of test_train_loop; ``step_delay`` seconds of sleep per step (a hook)."""
  hooks = [lambda *_: time.sleep(step_delay)] if step_delay else []
  cfg = loop.LoopConfig(num_steps=num_steps, log_every=log_every, checkpoint_every=1000,
                        tensorboard=False, hook_every=1 if hooks else 0,
                        on_nonfinite=on_nonfinite)
  return loop.run(name="toy", workdir=workdir, model=_Tiny(nnx.Rngs(0)), loss_fn=loss_fn,
                  tx=_optimizer(), batches=_batches(), global_batch_size=8, config=cfg,
                  rng=_rng(), mesh=sharding.make_mesh(devices), hooks=hooks)


def _params(state):
  return jax.tree.leaves(jax.device_get(state.params))


_CHILD = """
import sys, jax
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_platforms", "cpu")
from otcxr_jax.training import loop
from tests.training.test_preemption import run_toy
try:
  run_toy(sys.argv[1], 10_000, step_delay=0.05)
except loop.Preempted as e:
  print(f"PREEMPTED {e.step}", flush=True)
  sys.exit(0)
sys.exit(3)
"""


def _poisoned_loss(bad_batch):
  """``_loss``, times NaN on the batch containing ``bad_batch``'s first input (NaN gradients)."""
  marker = float(bad_batch["x"][0, 0])

  def loss_fn(model, batch, rng):
    loss, metrics = _loss(model, batch, rng)
    poison = jnp.where(jnp.any(batch["x"][:, 0] == marker), jnp.nan, 1.0)
    return loss * poison, metrics

  return loss_fn


def test_skip_discards_the_nonfinite_update(tmp_path):
  num_steps, bad = 5, 2  # the third batch (0-based index 2) gives NaN
  stream = _batches()
  batches = [next(stream) for _ in range(num_steps)]
  loss_fn = _poisoned_loss(batches[bad])

  result = run_toy(tmp_path, num_steps, loss_fn=loss_fn, devices=jax.devices()[:1],
                   on_nonfinite="skip")
  assert [h["skipped_steps"] for h in result.history] == [0, 0, 1, 1, 1]
  assert np.isnan(result.history[bad]["loss"])
  assert int(result.state.step) == num_steps

  # reference: the plain train step, the bad batch's update left out (its step number still used)
  graphdef, state = state_lib.create_train_state(_Tiny(nnx.Rngs(0)), _optimizer(), _rng())
  step_fn = jax.jit(state_lib.make_train_step(graphdef, _loss, _optimizer()))
  for k, batch in enumerate(batches):
    if k == bad:
      state = state.replace(step=state.step + 1)
    else:
      state, _ = step_fn(state, batch)
  for got, want in zip(_params(result.state), _params(state)):
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_stop_raises_at_the_first_nonfinite_step(tmp_path):
  batches = _batches()
  third = [next(batches) for _ in range(3)][2]
  with pytest.raises(loop.NonFiniteLossError, match=r"not finite at step 3; last good"):
    run_toy(tmp_path, 6, loss_fn=_poisoned_loss(third), log_every=100)


def test_bad_policy_is_refused():
  with pytest.raises(ValueError, match="on_nonfinite='ignore'"):
    loop.LoopConfig(num_steps=1, on_nonfinite="ignore")
