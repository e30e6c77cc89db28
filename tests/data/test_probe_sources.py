"""``probe.train_examples``: the probe's labelled subset of the training split."""

import numpy as np
import pytest

from otcxr_jax import config_lib
from otcxr_jax.data import datasets
from tests.tiny import tiny_config


def _ids(source):
  return [source[i]["image_id"] for i in range(len(source))]


def test_the_subset_is_a_fixed_random_part_of_the_training_split_in_its_order(tmp_path):
  config = tiny_config(tmp_path / "data")
  full = datasets.probe_sources(config)
  everything = _ids(full["train"])
  config.probe.train_examples = 9
  first, again = datasets.probe_sources(config), datasets.probe_sources(config)
  chosen = _ids(first["train"])
  assert len(chosen) == len(set(chosen)) == 9 and chosen == _ids(again["train"])
  positions = [everything.index(c) for c in chosen]
  assert positions == sorted(positions)  # the split's order
  # not simply the first images; the same whatever the run's seed
  assert positions != list(range(9))
  config.seed = 123
  assert _ids(datasets.probe_sources(config)["train"]) == chosen
  # validation and test are whole
  for split in ("validation", "test"):
    assert _ids(first[split]) == _ids(full[split])
  record = first["train"][0]
  np.testing.assert_array_equal(record["image"], full["train"][positions[0]]["image"])


def test_more_examples_than_the_split_holds_is_refused_naming_the_field(tmp_path):
  config = tiny_config(tmp_path / "data")
  total = len(datasets.probe_sources(config)["train"])
  config.probe.train_examples = total + 1
  with pytest.raises(ValueError, match=rf"probe.train_examples={total + 1} exceeds the {total} "):
    datasets.probe_sources(config)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_config_check_refuses_a_bad_count(tmp_path, bad):
  config = tiny_config(tmp_path / "data")
  with config.ignore_type():  # what a loaded JSON or a hand-written config can hold
    config.probe.train_examples = bad
  with pytest.raises(ValueError, match="probe.train_examples"):
    config_lib.validate(config)
