"""benchmarks/train_step.py keeps working: a tiny demo config, two timed steps."""

import json
import math

import pytest

from benchmarks import train_step
from configs import demo


def _tiny_config(batch_size=8):
  c = demo.get_config()
  c.train.batch_size = batch_size
  c.data.image_size = 32
  c.model.width = 0.125
  c.model.projector_hidden = 32
  c.model.projector_dim = 16
  c.model.cvsim_heads = 2
  c.objective.num_iters = 5
  return c


@pytest.fixture(scope="module")
def result_and_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("bench") / "out.json"
  return train_step.run(_tiny_config(), steps=2, warmup=1, json_path=str(path)), path


@pytest.mark.slow
def test_reports_positive_timings_that_add_up(result_and_file):
  result, _ = result_and_file
  for key in ("compile_s", "step_ms", "images_per_s"):
    assert result[key] > 0, key
  parts = result["components_ms"]
  assert set(parts) == set(train_step.COMPONENTS)
  for key in ("encoder", "sinkhorn", "augmentation"):
    assert parts[key] > 0, key
  assert math.isclose(parts["rest"], result["step_ms"] - parts["encoder"] - parts["sinkhorn"])
  assert math.isclose(result["images_per_s"], 8 / (result["step_ms"] / 1e3))


@pytest.mark.slow
def test_summarises_devices_and_config(result_and_file):
  result, path = result_and_file
  assert result["devices"]["count"] == 4  # tests/conftest.py
  assert result["peak_memory_bytes"] is None  # CPU reports no memory statistics
  # demo.py's last-stage map has stride 16 (stride-2 small stem): 32 / 16 = 2.
  assert result["config"]["dense_grid"] == [2, 2]
  assert result["config"]["token_dim"] == 16
  # demo.py's location prior selects log-domain Sinkhorn (kernel mode is verified only for the
  # bare cosine cost).
  assert result["config"]["lse_mode"] is True
  assert len(result["load_average"]) == 3
  assert json.loads(path.read_text()) == result
  report = train_step.format_report(result)
  for label in ("encoder fwd+bwd", "Sinkhorn OT fwd+bwd", "rest", "augmentation", "n/a"):
    assert label in report


def test_refuses_bad_arguments():
  with pytest.raises(ValueError, match="steps"):
    train_step.benchmark(_tiny_config(), steps=0)
  with pytest.raises(ValueError, match="warmup"):
    train_step.benchmark(_tiny_config(), warmup=-1)
  with pytest.raises(ValueError, match="train.batch_size=6"):
    train_step.benchmark(_tiny_config(batch_size=6))
