"""Validation model selection: best state kept, early stopping, exact behaviour across resumption."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from otcxr_jax.data import pipeline
from otcxr_jax.training import loop, selection


class _Scalar(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jnp.zeros(()))


def _loss(model, batch, rng):
  del rng
  loss = jnp.mean((model.w[...] - batch["y"]) ** 2)
  return loss, {}


def _run(workdir, scores, *, num_steps, patience, hook_every=1):
  """Trains w towards 1 with SGD; the 'validation score' at step k is scores[k - 1]."""
  source = [{"y": np.float32(1.0), "id": str(i)} for i in range(8)]
  batches = pipeline.train_iterator(source, global_batch_size=4, seed=0,
                                    transform=pipeline.select_keys(["y"]))
  calls = []

  def evaluate(model):
    calls.append(float(model.w[...]))
    return {"score": scores[len(calls) - 1 + offset[0]], "w": float(model.w[...])}

  hook = selection.BestStateHook(workdir, "toy", evaluate, metric="score", patience=patience)
  offset = [len(hook.record.evaluations)]
  cfg = loop.LoopConfig(num_steps=num_steps, log_every=1, checkpoint_every=100,
                        tensorboard=False, hook_every=hook_every)
  result = loop.run(name="toy", workdir=workdir, model=_Scalar(), loss_fn=_loss,
                    tx=optax.sgd(0.1), batches=batches, global_batch_size=4, config=cfg,
                    rng=jax.random.key_data(jax.random.key(0)), hooks=[hook])
  return result, hook


def _w_after(steps):
  return 1.0 - 0.8**steps  # w <- w - 0.1 * 2 (w - 1), from w = 0


def test_best_state_restored_and_early_stop(tmp_path):
  scores = [0.5, 0.7, 0.6, 0.65, 0.69, 0.9, 0.95]
  result, hook = _run(tmp_path, scores, num_steps=7, patience=3)
  # best 0.7 at step 2; steps 3, 4, 5 do not improve -> stop after step 5.
  assert result.stopped_early is not None and int(result.state.step) == 5
  assert hook.done and hook.record.best_step == 2 and hook.record.best_value == 0.7
  best = hook.restore(result.state)
  np.testing.assert_allclose(float(best.params["w"][...]), _w_after(2), rtol=1e-6)
  assert [e["step"] for e in hook.record.evaluations] == [1, 2, 3, 4, 5]
  logged = [h for h in result.history if "val_score" in h]
  assert [h["val_best_score"] for h in logged] == [0.5, 0.7, 0.7, 0.7, 0.7]
  record = json.loads((tmp_path / "toy_selection.json").read_text())
  assert record["stopped_early"] and record["best_step"] == 2


def test_no_patience_runs_to_the_end_and_keeps_best(tmp_path):
  scores = [0.5, 0.7, 0.6, 0.65, 0.69, 0.9, 0.8]
  result, hook = _run(tmp_path, scores, num_steps=7, patience=0)
  assert result.stopped_early is None and int(result.state.step) == 7
  assert hook.record.best_step == 6
  np.testing.assert_allclose(float(hook.restore(result.state).params["w"][...]), _w_after(6),
                             rtol=1e-6)


def test_resumed_selection_equals_uninterrupted(tmp_path):
  scores = [0.5, 0.7, 0.6, 0.65, 0.69, 0.9, 0.95, 0.1]
  _, full = _run(tmp_path / "full", scores, num_steps=8, patience=0)
  _run(tmp_path / "split", scores, num_steps=3, patience=0)
  _, resumed = _run(tmp_path / "split", scores, num_steps=8, patience=0)
  assert resumed.record == full.record
  assert resumed.record.best_step == 7


def test_nonfinite_score_never_selected(tmp_path):
  _, hook = _run(tmp_path, [float("nan"), 0.3, float("nan")], num_steps=3, patience=0)
  assert hook.record.best_step == 2


def test_missing_metric_is_named(tmp_path):
  with pytest.raises(KeyError, match="'auc'"):
    hook = selection.BestStateHook(tmp_path, "toy", lambda m: {"score": 1.0}, metric="auc")
    hook(1, *_state_for_call())


def _state_for_call():
  from otcxr_jax.training import state as state_lib
  graphdef, state = state_lib.create_train_state(_Scalar(), optax.sgd(0.1),
                                                 jax.random.key_data(jax.random.key(0)))
  return graphdef, state
