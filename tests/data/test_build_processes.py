"""``data.build_processes``: the worker processes of a dataset build, from the config to the pool
that renders or decodes (``tfds_builders/cxr_base/parallel.py``)."""

import pytest

from builders import layouts
from otcxr_jax import config_lib
from otcxr_jax.data import datasets
from otcxr_jax.modes import build_dataset
from otcxr_jax.training import workdir as workdir_lib
from tests.tiny import tiny_config
from tfds_builders.cxr_base import parallel


@pytest.fixture
def pools(monkeypatch):
  """The ``processes`` of every ExamplePool a build opens, in order."""
  opened = []
  original = parallel.ExamplePool

  class Recording(original):
    def __init__(self, *args, processes=None, **kwargs):
      opened.append(processes)
      super().__init__(*args, processes=processes, **kwargs)

  monkeypatch.setattr(parallel, "ExamplePool", Recording)
  return opened


@pytest.mark.parametrize("value, expected", [(0, None), (3, 3)])
def test_a_real_dataset_build_gets_the_configs_processes(tmp_path, pools, value, expected):
  manual = tmp_path / "manual"
  layouts.rsna(manual)
  c = config_lib.base_config()
  c.mode = "build_dataset"
  c.data.name, c.data.config = "rsna_pneumonia", "32"
  c.data.data_dir, c.data.manual_dir = str(tmp_path / "data"), str(manual)
  c.data.build_processes = value
  config_lib.validate(c)
  report = build_dataset.run(c, str(tmp_path / "work"))
  assert report.splits["train"].images > 0
  assert pools and set(pools) == {expected}  # every split's pool


def test_the_synthetic_build_of_a_run_gets_the_configs_processes(tmp_path, pools):
  c = tiny_config(tmp_path / "data")
  c.data.build_processes = 2
  assert len(datasets.split_source(c, "train")) > 0
  assert pools and set(pools) == {2}


@pytest.mark.parametrize("value", [-1, True])  # a float or str: the typed field refuses it
def test_a_bad_value_is_refused_before_any_build(value):
  for mode in ("pretrain", "build_dataset"):
    c = config_lib.base_config()
    c.mode = mode
    c.data.build_processes = value
    with pytest.raises(config_lib.ConfigError, match="config.data.build_processes="):
      config_lib.validate(c)


def test_changing_it_changes_no_result(tmp_path):
  c = tiny_config(tmp_path / "data")
  workdir_lib.save_config(c, tmp_path)
  c.data.build_processes = 4
  (change,) = workdir_lib.check_config(c, tmp_path).changes
  assert (change.field, change.old, change.new, change.allowed_by) == (
      "data.build_processes", 0, 4, "neutral")
