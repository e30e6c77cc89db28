"""Evaluation modes: pretrained-encoder loading, weighted kNN on centred features (against numpy
and a hand-computed case), linear_probe and knn end to end.

End to end: the runs (the unit tests are in tests/modes/test_eval_modes.py)."""

import json
import re

import jax
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import roc_auc_score

from otcxr_jax import config_lib, methods
from otcxr_jax.evaluation import diagnostics, whitening
from otcxr_jax.models import factory
from otcxr_jax.modes import knn as knn_mode
from otcxr_jax.modes import linear_probe as linear_probe_mode
from otcxr_jax.modes import network
from otcxr_jax.training import checkpoint as ckpt_lib
from tests.e2e.shared_runs import TINY_GROUP
from tests.tensorboard_events import read_events
from tests.tiny import tiny_config
from tests.modes.test_eval_modes import _numpy_knn


pytestmark = pytest.mark.xdist_group(TINY_GROUP)


@pytest.fixture(scope="module")
def pretrained(tiny_pretraining):
  """The tiny 2-step pretraining run (tests/e2e/shared_runs.py): its config, the folder of its
  workdir ``pretrain`` and the trained encoder's state."""
  return tiny_pretraining


def test_loads_the_trained_encoder_and_rejects_another_width(pretrained):
  config, root, trained = pretrained
  initial = jax.device_get(nnx.state(methods.build_model(config, nnx.Rngs(config.seed)).encoder))
  # The workdir or its checkpoint directory, with the evaluation's config or from config.json alone
  for path, given in [(root / "pretrain/checkpoints/pretrain", config), (root / "pretrain", None)]:
    restored = ckpt_lib.restore_network(path, given)
    assert restored.step == 2 and restored.directory == root / "pretrain/checkpoints/pretrain"
    loaded = jax.device_get(nnx.state(restored.module))
    jax.tree.map(np.testing.assert_array_equal, loaded, trained)  # params and BatchNorm stats
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(loaded), jax.tree.leaves(initial)))

  other = tiny_config(root / "tfds")
  other.model.width = 0.25
  # A config describing another network is refused, naming both values ...
  with pytest.raises(ckpt_lib.NetworkConflictError,
                     match=r"config model.width=0.25 conflicts with the network of the run it "
                           r"reads \(checkpoint\): model.width=0.125 in .*pretrain/config.json"):
    ckpt_lib.restore_network(root / "pretrain", other)
  # ... and a checkpoint that does not hold the network a config describes names the parameter.
  abstract = nnx.eval_shape(lambda: factory.build_encoder(other, nnx.Rngs(0)))
  with pytest.raises(ValueError) as error:
    ckpt_lib.restore_module(abstract, root / "pretrain/checkpoints/pretrain", under="encoder")
  match = re.search(r"parameter 'params/encoder/([\w/]+)' is shape (\([\d, ]*\)) in the "
                    r"checkpoint but shape (\([\d, ]*\))", str(error.value))
  assert match, str(error.value)
  path, in_checkpoint, in_config = match.groups()
  assert str(_encoder_param_shapes(config)[path]) == in_checkpoint
  assert str(_encoder_param_shapes(other)[path]) == in_config != in_checkpoint

  no_cvsim = tiny_config(root / "tfds")
  no_cvsim.model.cvsim = False
  abstract = nnx.eval_shape(lambda: methods.build_model(no_cvsim, nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"parameter 'params/cvsim/\S+' is shape \(\d+(, \d+)*,?\) "
                                       r"in the checkpoint but absent in the config's model"):
    ckpt_lib.restore_module(abstract, root / "pretrain/checkpoints/pretrain")
  with pytest.raises(ckpt_lib.NetworkConflictError, match=r"config model.cvsim=False"):
    ckpt_lib.restore_network(root / "pretrain", no_cvsim, build_model=methods.build_model)


def _encoder_param_shapes(config):
  """``{'stem/conv/kernel': shape}`` of the encoder ``config`` describes."""
  params = nnx.state(factory.build_encoder(config, nnx.Rngs(0)), nnx.Param)
  return {"/".join(str(k) for k in path): tuple(v[...].shape)
          for path, v in nnx.to_flat_state(params)}


def _check_summary(split, class_names, n):
  assert split["num_examples"] == n
  assert set(split["per_class_auc"]) == set(split["per_class_auc_ci95"]) == set(class_names)
  aucs = [a for a in split["per_class_auc"].values() if a is not None]
  assert aucs and all(0.0 <= a <= 1.0 for a in aucs)
  assert split["mean_auc"] == pytest.approx(np.mean(aucs))
  low, high = split["mean_auc_ci95"]
  assert 0.0 <= low <= high <= 1.0


def test_linear_probe_and_knn_modes_end_to_end(pretrained):
  from otcxr_jax.data import datasets
  config, root, _ = pretrained
  class_names = list(datasets.class_names(config))
  for mode, module, init in [("linear_probe", linear_probe_mode, "pretrained"),
                             ("knn", knn_mode, "random")]:
    c = tiny_config(root / "tfds", mode=mode)
    c.probe.init = init
    c.probe.checkpoint_dir = str(root / "pretrain/checkpoints/pretrain")
    c.knn.k = 5
    c.probe.readout = "pooled"  # the pooled features (the demo's map readout is checked below)
    c.train.tensorboard = mode == "linear_probe"  # one mode's results read back from TensorBoard
    config_lib.validate(c)
    workdir = root / mode
    module.run(c, str(workdir))
    result = json.loads((workdir / "metrics.json").read_text())
    if c.train.tensorboard:
      scalars, _, _ = read_events(workdir / "tensorboard" / mode)
      assert scalars["test/mean_auc"] == pytest.approx(result["test"]["mean_auc"])
      assert scalars["validation_mean_auc"] == pytest.approx(result["validation_mean_auc"])
    else:
      assert not (workdir / "tensorboard").exists()
    assert result["mode"] == mode and result["init"] == init
    assert result["dataset"] == f"{c.data.name}/{c.data.config}"
    n_test = len(datasets.split_source(c, c.data.test_split))
    _check_summary(result["test"], class_names, n_test)
    if mode == "knn":
      n_val = len(datasets.split_source(c, c.data.val_split))
      _check_summary(result["validation"], class_names, n_val)
      assert result["k"] == 5 and result["bank_size"] == 32
      assert result["similarity"] == "cosine of features whitened with the bank's statistics"
      # The AUCs of the numpy reference's scores on the same frozen features, whitened with the
      # bank's statistics (knn.whiten; tests/modes/test_eval_modes.py checks the whitening), by
      # sklearn.
      encoder, _ = network.encoder(c, workdir)
      feats = linear_probe_mode.frozen_features(c, encoder)
      for split in ("validation", "test"):
        bank, queries = whitening.whitened(feats["train"][0], feats[split][0])
        scores = _numpy_knn(bank, feats["train"][1], queries, 5, c.knn.temperature)
        labels = feats[split][1]
        for j, name in enumerate(class_names):
          expected = (roc_auc_score(labels[:, j], scores[:, j])
                      if 0 < labels[:, j].sum() < len(labels) else None)
          assert result[split]["per_class_auc"][name] == pytest.approx(expected, abs=1e-6)
      # probe.readout='map': the 4x4 dense map flattened, whose mean over positions is the pooled
      # feature read above.
      c.probe.readout = "map"
      maps = linear_probe_mode.frozen_features(c, encoder)["test"][0]
      assert maps.shape == (n_test, 16 * encoder.num_features)
      np.testing.assert_allclose(maps.reshape(n_test, 16, -1).mean(1), feats["test"][0],
                                 rtol=1e-4, atol=1e-5)
    else:
      assert result["checkpoint_dir"] == c.probe.checkpoint_dir
      assert set(result["validation_mean_auc_by_weight_decay"]) == {"0.001"}
      # The probed encoder's feature spread, on every training image (fewer than 512 here).
      encoder, _ = network.encoder(c, workdir)
      encoder.eval()
      train = datasets.split_source(c, c.data.train_split)
      out = encoder(np.stack([r["image"] for r in train]).astype(np.float32) / 255.0)
      shares = diagnostics.variance_shares(np.asarray(out.dense))
      expected = dict(zip(("position_share", "image_share", "interaction_share"), shares),
                      pooled_std_over_mean=diagnostics.pooled_std_over_mean(
                          np.asarray(out.pooled)))
      assert result["feature_spread"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
