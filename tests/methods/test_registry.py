"""One registry entry per pretraining method, and every list of method names derived from the
registries: ``objectives/registry.OBJECTIVES`` (the names, each method's hyperparameter class),
``config_lib`` (the config sections), ``methods.METHODS`` (networks, losses, target schedules)."""

import dataclasses

import pytest

from otcxr_jax import config_lib, methods, models
from otcxr_jax.methods.common import Method
from otcxr_jax.models import factory
from otcxr_jax.objectives import registry
from otcxr_jax.training import workdir
from tests.tiny import tiny_config


def test_every_method_has_one_entry_in_each_registry_in_one_order():
  assert config_lib.METHODS == tuple(registry.OBJECTIVES) == tuple(methods.METHODS)
  assert config_lib.METHODS[0] == "otcxr"
  assert all(method.name == name for name, method in methods.METHODS.items())


def test_each_method_section_holds_its_hyperparameter_class_defaults():
  base = config_lib.base_config()
  for name, method in methods.METHODS.items():
    assert method.section == config_lib.METHOD_SECTIONS[name]
    defaults = dataclasses.asdict(registry.OBJECTIVES[name].config())
    assert dict(base[method.section]) == defaults, name
  assert config_lib.METHOD_SECTIONS["otcxr"] == "objective"


def test_name_lists_come_from_the_registries():
  assert config_lib.ENCODERS == tuple(models.ENCODERS)
  assert config_lib.COMPUTE_DTYPES == tuple(factory.COMPUTE_DTYPES)
  assert workdir.SECTION_METHODS == {section: name
                                     for name, section in config_lib.METHOD_SECTIONS.items()}


def test_byol_has_a_target_schedule_and_otcxr_only_with_its_image_level_teacher(tmp_path):
  config = tiny_config(tmp_path)
  for teacher_tau, expected in [(0.0, ["byol"]), (0.99, ["otcxr", "byol"])]:
    config.objective.teacher_tau = teacher_tau
    with_target = []
    for name in methods.METHODS:
      config.method = name
      if methods.target_decay(config) is not None:
        with_target.append(name)
    assert with_target == expected, teacher_tau
  config.method = "otcxr"
  config.train.num_steps = 10
  decay = methods.target_decay(config)
  # BYOL's cosine schedule from the base decay at step 0 to 1 at the last step.
  assert decay(0) == pytest.approx(0.99) and decay(10) == pytest.approx(1.0)
  assert decay(5) == pytest.approx(0.995)  # (1 + 0.99) / 2


def test_an_unknown_method_is_refused_by_name(tmp_path):
  config = tiny_config(tmp_path)
  config.method = "mocov3"
  with pytest.raises(config_lib.ConfigError, match=r"config\.method='mocov3'"):
    methods.get(config)
  with pytest.raises(ValueError, match="objectives/registry.py"):
    Method("mocov3", build_model=factory.siamese_model, make_loss_fn=lambda config: None)
