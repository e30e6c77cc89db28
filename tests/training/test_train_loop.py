"""The shared train loop: exact resumption, device-count invariance, clear failures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from otcxr_jax.data import pipeline
from otcxr_jax.training import loop, optim, sharding


class _Tiny(nnx.Module):
  """Linear -> BatchNorm -> Linear: BatchNorm makes the loss depend on global-batch statistics."""

  def __init__(self, rngs):
    self.a = nnx.Linear(6, 8, rngs=rngs)
    self.bn = nnx.BatchNorm(8, rngs=rngs)
    self.b = nnx.Linear(8, 1, rngs=rngs)

  def __call__(self, x):
    return self.b(jax.nn.relu(self.bn(self.a(x))))


def _loss(model, batch, rng):
  noise = 0.01 * jax.random.normal(rng, batch["x"].shape)
  pred = model(batch["x"] + noise)[:, 0]
  loss = jnp.mean((pred - batch["y"]) ** 2)
  return loss, {"mse": loss}


def _source(n=64):
  rs = np.random.RandomState(0)
  x = rs.randn(n, 6).astype(np.float32)
  return [{"x": x[i], "y": np.float32(x[i].sum()), "id": str(i)} for i in range(n)]


def _run(workdir, num_steps, *, devices=None, checkpoint_every=2, lr=0.05, opt="lars"):
  mesh = sharding.make_mesh(devices)
  batches = pipeline.train_iterator(_source(), global_batch_size=8, seed=3,
                                    transform=pipeline.select_keys(["x", "y"]))
  schedule = optim.make_schedule(peak=lr, total_steps=6, warmup_steps=2)
  tx = optim.make_optimizer(opt, schedule=schedule, weight_decay=1e-4)
  cfg = loop.LoopConfig(num_steps=num_steps, log_every=1, checkpoint_every=checkpoint_every,
                        tensorboard=False)
  result = loop.run(name="toy", workdir=workdir, model=_Tiny(nnx.Rngs(0)), loss_fn=_loss, tx=tx,
                    batches=batches, global_batch_size=8, config=cfg, rng=jax.random.key_data(
                        jax.random.key(1)), mesh=mesh, schedule=schedule)
  return result, batches


def _params(result):
  return jax.tree.leaves(jax.device_get(result.state.params))


def test_resume_continues_exactly(tmp_path):
  full, full_batches = _run(tmp_path / "full", 6)
  _run(tmp_path / "split", 3, checkpoint_every=100)  # saves at its last step only
  resumed, resumed_batches = _run(tmp_path / "split", 6)
  assert resumed.resumed_from == 3
  for a, b in zip(_params(full), _params(resumed)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(next(full_batches)["x"], next(resumed_batches)["x"])
  # the resumed run's log continues the uninterrupted one
  assert [h["step"] for h in resumed.history] == [4, 5, 6]
  np.testing.assert_allclose([h["loss"] for h in resumed.history],
                             [h["loss"] for h in full.history[3:]], rtol=0, atol=0)


def test_relative_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  result, _ = _run("relative/workdir", 2)
  assert (tmp_path / "relative/workdir/checkpoints/toy/2").is_dir()
  assert result.history[-1]["step"] == 2


def test_four_devices_match_one(tmp_path):
  assert len(jax.devices()) == 4
  one, _ = _run(tmp_path / "one", 3, devices=jax.devices()[:1])
  four, _ = _run(tmp_path / "four", 3, devices=jax.devices())
  np.testing.assert_allclose([h["loss"] for h in one.history],
                             [h["loss"] for h in four.history], rtol=1e-5)
  for a, b in zip(_params(one), _params(four)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_batch_size_must_split_over_devices(tmp_path):
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match="train.batch_size=6 must be divisible"):
    sharding.check_batch_size(6, mesh)


def test_non_finite_loss_names_step(tmp_path):
  with pytest.raises(loop.NonFiniteLossError, match=r"at step \d; last good checkpoint"):
    _run(tmp_path / "nan", 4, lr=1e38, opt="sgd")


def test_process_slices_partition_global_batches():
  source = list(range(40))
  def take(pid, n, steps=3):
    it = pipeline.train_iterator([{"v": np.int32(v)} for v in source], global_batch_size=8,
                                 seed=0, transform=pipeline.select_keys(["v"]),
                                 process_index=pid, process_count=n)
    return [next(it)["v"] for _ in range(steps)]
  whole = take(0, 1)
  halves = [take(0, 2), take(1, 2)]
  for s in range(3):
    np.testing.assert_array_equal(whole[s], np.concatenate([halves[0][s], halves[1][s]]))
