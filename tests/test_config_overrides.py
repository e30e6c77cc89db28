"""Command-line overrides that change one field keep the config consistent: switching the demo's
ImageNet stem to the small stem needs no second field, and a stride given for the ImageNet stem is
refused with a message naming both fields."""

import pathlib
import sys
from unittest import mock

import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from otcxr_jax import config_lib
from otcxr_jax.models import factory

REPO = pathlib.Path(__file__).resolve().parents[1]


def _parse(*overrides: str):
  """(config, override values) as ``python -m otcxr_jax.main`` parses them (locked config; the
  override flags are read from ``sys.argv``)."""
  argv = ["prog", f"--config={REPO / 'configs' / 'demo.py'}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  with mock.patch.object(sys, "argv", argv):
    values(argv)
  return values.config, config_flags.get_override_values(values["config"])


def _stage_strides(config) -> dict:
  encoder = nnx.eval_shape(lambda: factory.build_encoder(config, nnx.Rngs(0)))
  return dict(encoder.stage_strides)


def test_one_field_switches_the_demos_stem():
  config, overrides = _parse()
  assert (config.model.stem, config.model.num_stages) == ("imagenet", 3)
  strides = _stage_strides(config)
  assert strides["stem"] == 2 and strides["stage3"] == 16  # conv/2 + max-pool: the ImageNet ResNet
  config, overrides = _parse("--config.model.stem=small")
  config_lib.validate(config)
  config_lib.check_overrides(config, overrides)
  assert factory.stem_stride(config.model) == 1
  assert _stage_strides(config)["stage3"] == 4  # 3x3 stem of stride 1, no max-pool


def test_small_stem_stride_still_applies():
  config, overrides = _parse("--config.model.stem=small", "--config.model.stem_stride=2")
  config_lib.check_overrides(config, overrides)
  assert factory.stem_stride(config.model) == 2 and _stage_strides(config)["stage3"] == 8


@pytest.mark.parametrize("stride, refused", [(2, True), (1, False)])
def test_a_stride_given_for_the_imagenet_stem_is_refused(stride, refused):
  config, overrides = _parse("--config.model.stem=imagenet", f"--config.model.stem_stride={stride}")
  if not refused:
    config_lib.check_overrides(config, overrides)
    return
  with pytest.raises(config_lib.ConfigError,
                     match=r"model.stem_stride=2 applies to model.stem='small' only; "
                           r"model.stem='imagenet' has a fixed stride"):
    config_lib.check_overrides(config, overrides)


def test_stem_stride_must_be_a_positive_int():
  config, _ = _parse("--config.model.stem_stride=0")
  with pytest.raises(config_lib.ConfigError, match="model.stem_stride=0: expected a positive int"):
    config_lib.validate(config)


def test_the_command_line_refuses_the_stride_before_any_compute(tmp_path):
  import os
  import subprocess
  workdir = tmp_path / "w"
  result = subprocess.run(
      [sys.executable, "-m", "otcxr_jax.main", "--config", "configs/demo.py",
       f"--workdir={workdir}", "--config.model.stem=imagenet", "--config.model.stem_stride=2"],
      cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 2
  assert "Invalid config (configs/demo.py): config.model.stem_stride=2 applies to" in result.stderr
  assert not workdir.exists()


def test_num_stages_ends_the_network_and_dense_stage_must_exist():
  config, _ = _parse("--config.model.stem=imagenet", "--config.model.num_stages=3")
  config_lib.validate(config)
  strides = _stage_strides(config)
  assert max(strides.values()) == 16 and "stage4" not in strides  # 4x4 map at 64x64
  config, _ = _parse("--config.model.num_stages=3", "--config.model.dense_stage=stage4")
  with pytest.raises(config_lib.ConfigError, match="model.dense_stage='stage4'"):
    config_lib.validate(config)


def test_last_stride_gives_four_stages_a_4x4_map_at_64_and_is_checked():
  config, _ = _parse("--config.model.num_stages=4", "--config.model.last_stride=1")
  config_lib.validate(config)
  strides = _stage_strides(config)
  assert strides["stage4"] == strides["stage3"] == 16
  config, _ = _parse("--config.model.last_stride=3")
  with pytest.raises(config_lib.ConfigError, match="model.last_stride=3: expected 1 or 2"):
    config_lib.validate(config)


def test_otcxr_on_an_inner_stage_is_refused():
  """Stages after OTCXR's dense map get no gradient (the image-level term reads the mean of the
  same dense tokens); the evaluations' pooled features come from them, so such a config would
  evaluate layers at their initialisation."""
  for extra in ((), ("--config.objective.global_weight=1.0",)):
    config, _ = _parse("--config.model.dense_stage=stage2", *extra)
    with pytest.raises(config_lib.ConfigError, match="no gradient"):
      config_lib.validate(config)
  config, _ = _parse("--config.model.dense_stage=stage2", "--config.method=vicregl",
                     "--config.mode=pretrain")
  config_lib.validate(config)
