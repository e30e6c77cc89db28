"""Evaluation modes: pretrained-encoder loading, weighted kNN on centred or whitened features
(against numpy and a hand-computed case), linear_probe and knn end to end."""

import math

import numpy as np
import pytest

from otcxr_jax import config_lib
from otcxr_jax.evaluation import knn
from otcxr_jax.training import checkpoint as ckpt_lib
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


def test_whitened_knn_matches_numpy_with_a_cholesky_whitening():
  """Whitening is unique up to a rotation, which leaves cosines unchanged: the scores equal the
  numpy vote on features whitened independently, with the inverse Cholesky factor."""
  rng = np.random.default_rng(3)
  rotation = np.linalg.qr(rng.normal(size=(5, 5)))[0]
  mixing = np.diag([10.0, 3.0, 1.0, 0.3, 0.1]) @ rotation  # variances 100 to 0.01
  bank = rng.normal(size=(60, 5)) @ mixing + 7.0
  queries = rng.normal(size=(17, 5)) @ mixing + 7.0
  bank_y = (rng.uniform(size=(60, 2)) < 0.5).astype(np.float32)
  mean = bank.mean(0)
  inverse_factor = np.linalg.inv(np.linalg.cholesky(np.cov(bank - mean, rowvar=False))).T
  expected = _numpy_knn((bank - mean) @ inverse_factor, bank_y, (queries - mean) @ inverse_factor,
                        5, 0.1, center=False)
  got = knn.knn_scores(bank, bank_y, queries, k=5, temperature=0.1, whiten=True)
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
  assert not np.allclose(knn.knn_scores(bank, bank_y, queries, k=5, temperature=0.1), expected,
                         atol=0.05)


def test_knn_rejects_k_larger_than_bank():
  with pytest.raises(ValueError, match=r"k must be an int in \[1, 4\]"):
    knn.knn_scores(np.ones((4, 2)), np.ones((4, 1)), np.ones((1, 2)), k=5, temperature=0.1)


def test_config_validates_probe_and_knn_fields():
  c = config_lib.base_config()
  config_lib.validate(c)
  for field, value in [("probe.init", "imagenet"), ("probe.readout", "grid"), ("knn.k", 0),
                       ("knn.temperature", 0.0), ("probe.whiten", None), ("knn.whiten", None)]:
    bad = config_lib.base_config()
    section, name = field.split(".")
    bad[section][name] = value
    with pytest.raises(config_lib.ConfigError, match=f"config.{field}="):
      config_lib.validate(bad)


def test_missing_run_or_checkpoint_directory_names_the_path(tmp_path):
  config = tiny_config(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
    ckpt_lib.restore_network(tmp_path / "nowhere", config)
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    ckpt_lib.latest_checkpoint(tmp_path, source="")
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(config.to_json_best_effort())
  (tmp_path / "run" / "checkpoints" / "pretrain").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    ckpt_lib.restore_network(tmp_path / "run", config)


def test_pixel_floor_is_a_linear_probe_input_only():
  c = config_lib.base_config()
  c.mode = "linear_probe"
  c.probe.init = config_lib.PIXEL_FLOOR
  config_lib.validate(c)
  for mode in ("knn", "segment", "demo"):
    c.mode = mode
    with pytest.raises(config_lib.ConfigError, match=r"config.probe.init='pixels'.*linear_probe"):
      config_lib.validate(c)
  c.mode = "linear_probe"
  c.probe.pixel_floor_size = 0
  with pytest.raises(config_lib.ConfigError, match="config.probe.pixel_floor_size=0"):
    config_lib.validate(c)


def test_linear_probe_mode_on_raw_pixels_is_the_demos_pixel_floor(tmp_path):
  """``probe.init='pixels'``: no network is read; the probe and its test scores are those of the
  demo's raw-pixel floor (features.downsampled_pixels, linear_probe.run) on the same splits."""
  from otcxr_jax.data import datasets
  from otcxr_jax.evaluation import features, linear_probe, score_files
  from otcxr_jax.modes import linear_probe as mode
  config = tiny_config(tmp_path / "tfds")
  config.mode = "linear_probe"
  config.probe.init = config_lib.PIXEL_FLOOR
  config.probe.pixel_floor_size = 8
  result = mode.run(config, str(tmp_path / "pixels"))
  assert (result["init"], result["encoder"], result["pixel_floor_size"]) == ("pixels", None, 8)
  d = config.data
  feats = {name: features.downsampled_pixels(datasets.split_source(config, split), size=8)
           for name, split in (("train", d.train_split), ("validation", d.val_split),
                               ("test", d.test_split))}
  assert feats["train"][0].shape[1] == 8 * 8
  p = config.probe
  reference = linear_probe.run(feats, workdir=tmp_path / "reference", name="pixels",
                               weight_decays=p.weight_decays, num_steps=p.num_steps,
                               batch_size=p.batch_size, learning_rate=p.learning_rate,
                               seed=config.seed, whiten=p.whiten)
  saved = score_files.load_scores(tmp_path / "pixels")
  np.testing.assert_allclose(saved.scores, reference.test_scores, atol=1e-6)
  np.testing.assert_array_equal(saved.labels, feats["test"][1])
  assert result["test"]["mean_auc"] == pytest.approx(reference.test_auc)
