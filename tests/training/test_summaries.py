"""Final results in TensorBoard: the scalars of metrics.json and the PNG figures, read back from
the event files."""

import numpy as np
import pytest
from PIL import Image

from otcxr_jax.training import summaries
from tests.tensorboard_events import read_events


def test_flatten_keeps_finite_numbers_under_slash_joined_names():
  result = {"mode": "knn", "k": 20, "test": {"mean_auc": 0.75, "per_class": {"Pleural effusion":
            0.5, "Mass": float("nan")}, "ci95": [0.7, 0.8]}, "stopped_early": False,
            "checkpoint": None, "probes": {"random init, data BN stats": {"auc": np.float32(0.5)}}}
  assert summaries.flatten_scalars(result) == {
      "k": 20.0, "test/mean_auc": 0.75, "test/per_class/Pleural_effusion": 0.5,
      "test/ci95/0": 0.7, "test/ci95/1": 0.8, "probes/random_init_data_BN_stats/auc": 0.5}


def test_results_and_figures_are_read_back_from_tensorboard(tmp_path):
  (tmp_path / "figures").mkdir()
  Image.fromarray(np.zeros((20, 30, 4), np.uint8)).save(tmp_path / "figures" / "auc_per_class.png")
  Image.fromarray(np.full((8, 12), 200, np.uint8)).save(tmp_path / "validation_curve.png")
  result = {"mode": "finetune", "test": {"mean_auc": 0.625, "per_class": {"Mass": 0.5}}}
  folder = summaries.write_results(tmp_path, "finetune", result, step=7)
  assert folder == tmp_path / "tensorboard" / "finetune"
  scalars, images, steps = read_events(folder)
  assert scalars == {"test/mean_auc": 0.625, "test/per_class/Mass": 0.5}
  assert images == {"figures/auc_per_class": (30, 20), "validation_curve": (12, 8)}
  assert steps == {7}


@pytest.mark.parametrize("process, enabled", [(0, False), (1, True)])
def test_nothing_is_written_when_disabled_or_not_process_zero(tmp_path, monkeypatch, process,
                                                              enabled):
  monkeypatch.setattr(summaries.jax, "process_index", lambda: process)
  assert summaries.write_results(tmp_path, "knn", {"auc": 0.5}, enabled=enabled) is None
  assert not (tmp_path / "tensorboard").exists()
