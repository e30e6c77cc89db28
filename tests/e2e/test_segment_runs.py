"""Segmentation transfer: U-Net decoder shapes, BCE + soft Dice, joint augmentation, the mode.

End to end: the runs (the unit tests are in tests/modes/test_segment.py)."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from otcxr_jax import config_lib, modes
from otcxr_jax.data import datasets
from otcxr_jax.models import factory
from otcxr_jax.modes import pretrain, segment
from tests.tiny import tiny_config
from tests.modes.test_segment import _segment_config


def test_dataset_without_masks_is_refused(tmp_path):
  c = _segment_config(tmp_path)
  c.data.name, c.data.config, c.data.synthetic_patients = "nih_chest_xray14", "224", 0
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.data\.name='nih_chest_xray14': expected a dataset with "
                           r"segmentation masks"):
    modes.validate(c)
  with pytest.raises(ValueError, match="'nih_chest_xray14': the dataset has no segmentation"):
    segment.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def _numpy_dice(pred, true):
  pred, true = pred.reshape(len(pred), -1), true.reshape(len(true), -1) > 0
  total = pred.sum(1) + true.sum(1)
  overlap = (pred & true).sum(1)
  return np.array([1.0 if t == 0 else 2.0 * o / t for o, t in zip(overlap, total)]), true.any(1)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("segment")
  config = _segment_config(root / "tfds")
  modes.validate(config)
  result = segment.run(config, str(root / "random"))
  return config, root / "random", result


def test_random_init_run_reports_dice_from_its_saved_predictions(random_run):
  config, workdir, result = random_run
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["test"] == result["test"] and metrics["validation"] == result["validation"]
  assert metrics["mode"] == "segment" and metrics["init"] == "random"
  test = metrics["test"]
  assert set(test) == {"dice_all", "dice_positive", "num_images", "num_positive"}

  # Independent recomputation: the saved binary predictions against the dataset's own masks.
  source = datasets.split_source(config, config.data.test_split)
  saved = np.load(workdir / segment.PREDICTIONS_FILE)
  true = np.stack([source[i]["mask"][..., 0] for i in range(len(source))])
  ids = [source[i]["image_id"].decode() for i in range(len(source))]
  assert saved["pred_mask"].shape == true.shape and list(saved["image_id"]) == ids
  dice, positive = _numpy_dice(saved["pred_mask"], true)
  assert 0 < positive.sum() < len(positive)
  assert test["num_images"] == len(source) and test["num_positive"] == int(positive.sum())
  assert test["dice_all"] == pytest.approx(dice.mean(), abs=1e-12)
  assert test["dice_positive"] == pytest.approx(dice[positive].mean(), abs=1e-12)
  np.testing.assert_allclose(saved["dice"], dice)

  # The validation scores are those of the selected step.
  record = json.loads((workdir / "segment_random_selection.json").read_text())
  assert metrics["best_step"] == record["best_step"]
  best = next(e for e in record["evaluations"] if e["step"] == record["best_step"])
  assert metrics["validation"]["dice_all"] == pytest.approx(best["dice_all"])
  assert best["dice_all"] == max(e["dice_all"] for e in record["evaluations"])
  assert (workdir / segment.EXAMPLES_FILE).stat().st_size > 0


def test_rerun_of_finished_or_stopped_run_evaluates_without_training(random_run, capsys):
  config, workdir, first = random_run
  record_path = workdir / "segment_random_selection.json"
  record = json.loads(record_path.read_text())
  record["stopped_early"] = True  # as if early stopping had ended the run at its last evaluation
  record_path.write_text(json.dumps(record))
  again = segment.run(config, str(workdir))
  assert "training images" not in capsys.readouterr().out
  assert again["test"] == first["test"] and again["best_step"] == first["best_step"]
  assert again["steps_trained"] == first["steps_trained"] == config.segment.num_steps


@pytest.fixture(scope="module")
def pretrained_checkpoint(tmp_path_factory):
  root = tmp_path_factory.mktemp("segment_pretrain")
  config = tiny_config(root / "tfds")  # 2 steps: the first has learning rate 0 (warm-up)
  config.optim.base_learning_rate = 0.5  # large enough to move the encoder visibly in one step
  result = pretrain.run(config, str(root / "pretrain"))
  encoder_params = jax.device_get(nnx.state(result.model().encoder, nnx.Param))
  return root, root / "pretrain/checkpoints/pretrain", encoder_params


def test_run_from_pretraining_checkpoint_starts_from_its_encoder(pretrained_checkpoint):
  root, checkpoint_dir, pretrained = pretrained_checkpoint
  config = _segment_config(root / "tfds", init="pretrained", checkpoint_dir=str(checkpoint_dir))
  config.segment.num_steps, config.segment.eval_every = 1, 1
  config.segment.encoder_learning_rate = 1e-9   # the selected encoder stays the pretrained one
  modes.validate(config)
  workdir = root / "segment"
  result = segment.run(config, str(workdir))
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["init"] == "pretrained" and metrics["checkpoint_dir"] == str(checkpoint_dir)
  assert metrics["test"]["num_positive"] > 0 and metrics["test"]["dice_all"] is not None
  assert result["best_step"] == 1

  stored = ocp.StandardCheckpointer().restore(
      workdir / "checkpoints/segment_pretrained_best/1/state")["params"]["encoder"]
  random = nnx.state(factory.build_encoder(config, nnx.Rngs(config.seed)), nnx.Param)
  stored, pretrained, random = _flat(stored), _flat(pretrained), _flat(random)
  assert set(stored) == set(pretrained) == set(random)
  for k in pretrained:
    np.testing.assert_allclose(stored[k], pretrained[k], atol=1e-6, err_msg=k)
  assert max(np.abs(pretrained[k] - random[k]).max() for k in pretrained) > 1e-3


def _flat(tree) -> dict[str, np.ndarray]:
  """``{'stem/conv/kernel': array}`` of an nnx state or of the dict orbax restores it as."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    out["/".join(n for n in names if n != "value")] = np.asarray(leaf)
  return out


def test_a_model_field_other_than_the_checkpoints_is_refused_naming_both(pretrained_checkpoint):
  root, checkpoint_dir, _ = pretrained_checkpoint
  config = _segment_config(root / "tfds", init="pretrained", checkpoint_dir=str(checkpoint_dir))
  config.model.width = 0.25
  with pytest.raises(ValueError, match=r"config model.width=0.25 conflicts with the network of "
                                       r"the run it reads \(config probe.checkpoint_dir\): "
                                       r"model.width=0.125 in "):
    segment.run(config, str(root / "mismatch"))
  assert not (root / "mismatch").exists()
