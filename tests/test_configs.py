"""Every experiment file in configs/ builds its config and passes the run's validation
(``otcxr_jax.modes.validate``: the mode, the shared sections, the mode's own section)."""

import importlib.util
import pathlib

import pytest

from otcxr_jax import modes

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def _config(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(f"configs.{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_every_config_file_is_found():
  assert len(CONFIGS) >= 20 and "demo" in {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_file_validates(path):
  config = _config(path)
  assert config.mode in modes.MODES, path.name
  modes.validate(config)

