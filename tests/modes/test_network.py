"""The network an evaluation reads comes from the run it names (``modes/network.py``): the run's
``config.json`` fills the evaluation config's network fields, a field set to another value is
refused naming both, and only without a named run does the config's own ``model`` count. No
weights are read here (the restores run in tests/e2e/)."""

import json

import pytest

from otcxr_jax import config_lib, modes
from otcxr_jax.modes import network
from otcxr_jax.training import checkpoint as ckpt_lib
from tests.tiny import tiny_config


def _pretraining_run(path, **model_fields):
  """A workdir holding a tiny pretraining run's config.json (no checkpoint)."""
  config = tiny_config(path / "tfds")
  config.objective.epsilon = 0.1
  for name, value in model_fields.items():
    config.model[name] = value
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(config.to_json_best_effort())
  return config


def _evaluation(mode="linear_probe", **section_fields):
  """An evaluation config that does not state the network: the defaults, and its section."""
  c = config_lib.base_config()
  c.mode = mode
  section = network.SECTIONS[mode]
  for name, value in section_fields.items():
    c[section][name] = value
  c.lock()
  return c


def _network(c):
  return {k: v for k, v in json.loads(c.to_json_best_effort()).items()
          if k in ("method", "model", "objective")}


@pytest.mark.parametrize("named", ["workdir", "checkpoint_dir"])
def test_the_named_runs_network_fills_the_config(tmp_path, named):
  stored = _pretraining_run(tmp_path / "pre", norm="batch")
  path = tmp_path / "pre" if named == "workdir" else tmp_path / "pre/checkpoints/pretrain"
  c = _evaluation(checkpoint_dir=str(path))
  resolved = network.resolve(c, tmp_path / "eval")
  assert _network(resolved) == _network(stored)
  assert resolved.model.encoder == "resnet18" and resolved.objective.epsilon == 0.1
  assert c.model.encoder == "resnet50"  # a copy: the given config is left as it was
  assert resolved.data.image_size == c.data.image_size and resolved.is_locked
  assert network.resolve(resolved, tmp_path / "eval").to_dict() == resolved.to_dict()
  modes.validate(resolved)


def test_a_field_set_to_another_value_is_refused_naming_both(tmp_path):
  _pretraining_run(tmp_path / "pre")
  c = _evaluation(checkpoint_dir=str(tmp_path / "pre"))
  with c.unlocked():
    c.model.width = 0.5
  with pytest.raises(ckpt_lib.NetworkConflictError) as error:
    network.resolve(c, tmp_path / "eval")
  message = str(error.value)
  assert "config model.width=0.5 conflicts with the network of the run it reads (config " \
         "probe.checkpoint_dir): model.width=0.125 in " + str(tmp_path / "pre/config.json") \
         in message
  with c.unlocked():
    c.model.width = 0.125  # the run's own value: accepted
  assert network.resolve(c, tmp_path / "eval").model.width == 0.125


def test_random_init_is_the_named_runs_network_or_the_configs_own(tmp_path):
  _pretraining_run(tmp_path / "pre")
  named = _evaluation(init="random", checkpoint_dir=str(tmp_path / "pre"))
  assert network.resolve(named, tmp_path / "eval").model.encoder == "resnet18"
  own = _evaluation(init="random")  # no run named: the config describes the network
  assert network.resolve(own, tmp_path / "eval") is own
  scratch = _evaluation("finetune", init="random")
  assert network.resolve(scratch, tmp_path / "eval") is scratch


def test_an_empty_checkpoint_dir_names_the_pretraining_run_in_the_workdir(tmp_path):
  _pretraining_run(tmp_path / "run")
  for init in ("pretrained", "random"):
    c = _evaluation(init=init)
    assert network.resolve(c, tmp_path / "run").model.encoder == "resnet18"
  assert network.named_run(_evaluation(), tmp_path / "run") == str(tmp_path / "run")
  # An evaluation's own config.json is not a network to read.
  (tmp_path / "probe").mkdir()
  (tmp_path / "probe" / "config.json").write_text(_evaluation().to_json_best_effort())
  c = _evaluation(init="random")
  assert network.resolve(c, tmp_path / "probe") is c
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"probe/config.json is a 'linear_probe' run's config \(config "
                           r"probe.checkpoint_dir='': the pretraining run of the evaluation's "
                           r"workdir\)"):
    network.resolve(_evaluation(), tmp_path / "probe")
  with pytest.raises(FileNotFoundError, match=r"is not the workdir of a run, nor a checkpoint "
                                              r"directory inside one"):
    network.resolve(_evaluation(), tmp_path / "fresh")


def test_a_run_without_a_network_is_refused(tmp_path):
  (tmp_path / "probe").mkdir()
  (tmp_path / "probe" / "config.json").write_text(_evaluation().to_json_best_effort())
  c = _evaluation(checkpoint_dir=str(tmp_path / "probe"))
  with pytest.raises(ckpt_lib.CheckpointError, match=r"is a 'linear_probe' run's config \(config "
                                                     r"probe.checkpoint_dir\)"):
    network.resolve(c, tmp_path / "eval")


def test_localize_reads_a_network_only_for_the_pretraining_maps(tmp_path):
  _pretraining_run(tmp_path / "pre")
  cam = _evaluation("localize", checkpoint_dir=str(tmp_path / "nowhere"))
  with cam.unlocked():
    cam.localize.methods = ("cam",)
  assert network.resolve(cam, tmp_path / "eval") is cam
  maps = _evaluation("localize", checkpoint_dir=str(tmp_path / "pre"))
  assert network.resolve(maps, tmp_path / "eval").model.cvsim_heads == 2


def test_other_modes_are_left_alone(tmp_path):
  c = tiny_config(tmp_path)
  assert modes.resolve(c, tmp_path) is c


def test_the_network_fields_name_each_methods_section():
  for method, section in config_lib.METHOD_SECTIONS.items():
    assert ckpt_lib.method_section(method) == section
    stored = {"method": method, "model": {"width": 0.5}, section: {"x": 1}, "probe": {"y": 2}}
    assert ckpt_lib.network_fields(stored) == {"method": method, "model.width": 0.5,
                                               f"{section}.x": 1}
