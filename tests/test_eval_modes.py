"""Evaluation modes: pretrained-encoder loading, weighted kNN on centred features (against numpy
and a hand-computed case), linear_probe and knn end to end."""

import json
import math
import re

import jax
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import roc_auc_score

from otcxr_jax import config_lib
from otcxr_jax.evaluation import checkpoints, knn
from otcxr_jax.modes import knn as knn_mode
from otcxr_jax.modes import linear_probe as linear_probe_mode
from otcxr_jax.modes import pretrain
from tests.tensorboard_events import read_events
from tests.tiny import tiny_config


def _numpy_knn(bank, bank_y, queries, k, temperature, center=True):
  """DINO's weighted kNN vote in float64 numpy, features centred on the bank's mean first."""
  bank, queries = np.asarray(bank, np.float64), np.asarray(queries, np.float64)
  if center:
    mean = bank.mean(axis=0)
    bank, queries = bank - mean, queries - mean
  bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  scores = np.zeros((len(queries), bank_y.shape[1]))
  for i, q in enumerate(queries):
    sims = bank @ q
    top = np.argsort(-sims)[:k]
    w = np.exp(sims[top] / temperature)
    scores[i] = (w[:, None] * bank_y[top]).sum(0) / w.sum()
  return scores


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("k,temperature,batch_size", [(1, 0.07, 7), (5, 0.07, 16), (12, 0.5, 4)])
def test_knn_scores_match_numpy(k, temperature, batch_size, center):
  rng = np.random.default_rng(k)
  # A common component far larger than the differences between examples, as in pooled features.
  offset = rng.uniform(5.0, 10.0, size=6)
  bank = offset + rng.normal(size=(40, 6)) * rng.uniform(0.5, 3.0, size=(40, 1))
  bank_y = (rng.uniform(size=(40, 3)) < 0.4).astype(np.float32)
  queries = offset + rng.normal(size=(23, 6))
  got = knn.knn_scores(bank, bank_y, queries, k=k, temperature=temperature,
                       batch_size=batch_size, center=center)
  np.testing.assert_allclose(got, _numpy_knn(bank, bank_y, queries, k, temperature, center),
                             rtol=1e-4, atol=1e-5)
  if k == 1:  # the nearest neighbour's labels
    np.testing.assert_array_equal(got, _numpy_knn(bank, bank_y, queries, 1, 1.0, center))


def test_knn_centres_on_the_bank_mean_by_hand():
  # Bank around (10, 10): centred, the four unit directions +x, -x, +y, -y.
  bank = np.array([[11.0, 10.0], [9.0, 10.0], [10.0, 11.0], [10.0, 9.0]])
  labels = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
  query = np.array([[10.5, 10.2]])  # centred (0.5, 0.2)
  got = knn.knn_scores(bank, labels, query, k=2, temperature=0.5)
  # Cosines with the bank: 0.5/r, -0.5/r, 0.2/r, -0.2/r (r = |(0.5, 0.2)|); the 2 nearest are
  # +x (labels 1, 0) and +y (labels 0, 1), with weights exp(0.5/r/T) and exp(0.2/r/T).
  r = math.hypot(0.5, 0.2)
  w_x, w_y = math.exp(0.5 / r / 0.5), math.exp(0.2 / r / 0.5)
  np.testing.assert_allclose(got, [[w_x / (w_x + w_y), w_y / (w_x + w_y)]], rtol=1e-5)
  # A shift of every feature leaves centred scores unchanged; the plain cosine it changes.
  shifted = knn.knn_scores(bank + 100.0, labels, query + 100.0, k=2, temperature=0.5)
  np.testing.assert_allclose(shifted, got, rtol=1e-4)
  plain = knn.knn_scores(bank + 100.0, labels, query + 100.0, k=2, temperature=0.5,
                         center=False)
  assert not np.allclose(plain, got, atol=0.05)


def test_knn_rejects_k_larger_than_bank():
  with pytest.raises(ValueError, match=r"k must be an int in \[1, 4\]"):
    knn.knn_scores(np.ones((4, 2)), np.ones((4, 1)), np.ones((1, 2)), k=5, temperature=0.1)


def test_config_validates_probe_and_knn_fields():
  c = config_lib.base_config()
  config_lib.validate(c)
  for field, value in [("probe.init", "imagenet"), ("knn.k", 0), ("knn.temperature", 0.0)]:
    bad = config_lib.base_config()
    section, name = field.split(".")
    bad[section][name] = value
    with pytest.raises(config_lib.ConfigError, match=f"config.{field}="):
      config_lib.validate(bad)


def test_missing_checkpoint_directory_names_the_path(tmp_path):
  config = tiny_config(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
    checkpoints.load_pretrained_encoder(config, tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    checkpoints.load_pretrained_encoder(config, tmp_path / "empty")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A tiny 2-step pretraining workdir, its config and the trained encoder's state."""
  root = tmp_path_factory.mktemp("eval")
  config = tiny_config(root / "tfds")
  result = pretrain.run(config, str(root / "pretrain"))
  return config, root, jax.device_get(nnx.state(result.model().encoder))


def test_loads_the_trained_encoder_and_rejects_another_width(pretrained):
  config, root, trained = pretrained
  encoder = checkpoints.load_pretrained_encoder(config, root / "pretrain/checkpoints/pretrain")
  initial = nnx.state(pretrain.build_model(config, nnx.Rngs(config.seed)).encoder)
  loaded = jax.device_get(nnx.state(encoder))
  jax.tree.map(np.testing.assert_array_equal, loaded, trained)  # params and BatchNorm stats
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(loaded), jax.tree.leaves(jax.device_get(initial))))

  other = tiny_config(root / "tfds")
  other.model.width = 0.25
  with pytest.raises(ValueError) as error:
    checkpoints.load_pretrained_encoder(other, root / "pretrain/checkpoints/pretrain")
  match = re.search(r"parameter 'params/encoder/([\w/]+)' is shape (\([\d, ]*\)) in the "
                    r"checkpoint but shape (\([\d, ]*\))", str(error.value))
  assert match, str(error.value)
  path, in_checkpoint, in_config = match.groups()
  assert str(_encoder_param_shapes(config)[path]) == in_checkpoint
  assert str(_encoder_param_shapes(other)[path]) == in_config != in_checkpoint

  no_cvsim = tiny_config(root / "tfds")
  no_cvsim.model.cvsim = False
  with pytest.raises(ValueError, match=r"parameter 'params/cvsim/\S+' is shape \(\d+(, \d+)*,?\) "
                                       r"in the checkpoint but absent in the config's model"):
    checkpoints.load_pretrained_encoder(no_cvsim, root / "pretrain/checkpoints/pretrain")


def _encoder_param_shapes(config):
  """``{'stem/conv/kernel': shape}`` of the encoder ``config`` describes."""
  params = nnx.state(pretrain.build_encoder(config, nnx.Rngs(0)), nnx.Param)
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
      # The AUCs of the numpy reference's scores on the same frozen features (sklearn).
      encoder, _ = checkpoints.probe_encoder(c, workdir)
      feats = linear_probe_mode.frozen_features(c, encoder)
      for split in ("validation", "test"):
        scores = _numpy_knn(*feats["train"], feats[split][0], 5, c.knn.temperature)
        labels = feats[split][1]
        for j, name in enumerate(class_names):
          expected = (roc_auc_score(labels[:, j], scores[:, j])
                      if 0 < labels[:, j].sum() < len(labels) else None)
          assert result[split]["per_class_auc"][name] == pytest.approx(expected, abs=1e-6)
    else:
      assert result["checkpoint_dir"] == c.probe.checkpoint_dir
      assert set(result["validation_mean_auc_by_weight_decay"]) == {"0.001"}
