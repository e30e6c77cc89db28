"""The two documented ways to build (``build_dataset`` / the build configs, and TFDS's build
command through ``python -m otcxr_jax.data.build``), resolution configs, and building and
reading without TensorFlow."""

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from builders import layouts
from otcxr_jax import config_lib, errors
from otcxr_jax.data import build
from tfds_builders.cxr_base import RESOLUTIONS, BuildReport, ManualDirError, OptionError

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rsna_download(tmp_path_factory):
  manual = tmp_path_factory.mktemp("rsna") / "manual"
  return manual, layouts.rsna(manual)


def test_build_dataset_returns_and_saves_the_report(rsna_download, tmp_path):
  manual, truth = rsna_download
  report = build.build_dataset("rsna_pneumonia", config="32", data_dir=str(tmp_path),
                               manual_dir=str(manual))
  version_dir = tmp_path / "rsna_pneumonia" / "32" / "1.0.0"
  assert build.dataset_dir("rsna_pneumonia", config="32", data_dir=str(tmp_path)) == version_dir
  assert isinstance(report, BuildReport)
  assert report == BuildReport.read(version_dir)
  assert report.manual_dir == str(manual) and report.config == "32"
  assert sum(report.splits[s].images for s in ("train", "validation", "test")) == len(truth.labels)
  shards = sorted(version_dir.glob("*.array_record-*"))
  assert len(shards) == 5
  # The metadata saved with the dataset carries the class names and a summary of the report.
  cls = build.builder_class("rsna_pneumonia")
  metadata = cls(config=cls.config_for("32"), data_dir=str(tmp_path)).info.metadata
  assert metadata["class_names"] == ["Pneumonia"]
  assert metadata["build_report"]["images"] == {s: c.images for s, c in report.splits.items()}
  # An existing dataset is reused, not rebuilt, and its report returned.
  stamps = [p.stat().st_mtime_ns for p in shards]
  again = build.build_dataset("rsna_pneumonia", config="32", data_dir=str(tmp_path),
                              manual_dir=str(manual))
  assert again == report and [p.stat().st_mtime_ns for p in shards] == stamps


def test_build_dataset_bad_arguments(tmp_path):
  # Each an expected failure (printed without a traceback) that names what to change.
  expected = (errors.UserError, *errors.external_expected())
  with pytest.raises(config_lib.ConfigError,
                     match="--config.data.manual_dir=.*docs/datasets.md, section `vinbig_cxr`"):
    build.build_dataset("vinbig_cxr", config="224", data_dir=str(tmp_path), manual_dir=None)
  with pytest.raises(config_lib.ConfigError, match="unknown dataset 'chexpert'"):
    build.build_dataset("chexpert", config="224", data_dir=str(tmp_path), manual_dir="x")
  with pytest.raises(OptionError, match="config must be a resolution.*got 'large'") as e:
    build.build_dataset("vinbig_cxr", config="large", data_dir=str(tmp_path), manual_dir="x")
  assert isinstance(e.value, expected) and isinstance(e.value, ValueError)
  with pytest.raises(ManualDirError, match=f"{tmp_path / 'x'} does not exist"):
    build.build_dataset("vinbig_cxr", config="224", data_dir=str(tmp_path),
                        manual_dir=str(tmp_path / "x"))
  assert not (tmp_path / "vinbig_cxr" / "224").exists()  # stopped before TFDS started


@pytest.mark.parametrize("name", build.REAL_DATASETS)
def test_build_config_files(name):
  from configs import build as build_config
  from configs import common
  short = {v: k for k, v in common.DATASETS.items()}[name]
  config = build_config.get_config(f"dataset={short}")
  config_lib.validate(config)
  assert (config.mode, config.data.name, config.data.config) == ("build_dataset", name, "224")
  assert config.data.data_dir == "~/tensorflow_datasets" and config.data.manual_dir is None
  config.data.manual_dir = "/data/download"  # what --config.data.manual_dir=... sets
  builder = build.builder_class(name)
  assert {str(r) for r in RESOLUTIONS} <= set(builder.builder_configs)
  assert builder.config_for(config.data.config).resolution == 224


def test_configs_of_any_resolution(tmp_path):
  builder = build.builder_class("siim_acr_pneumothorax")
  assert builder.config_for("512") is builder.builder_configs["512"]
  assert builder.config_for(40).resolution == 40
  with pytest.raises(OptionError, match="integer >= 8"):
    builder.config_for("4")
  # By name too, as TFDS's build command passes `--config=40`.
  assert builder(config="40", data_dir=str(tmp_path)).builder_config.resolution == 40
  assert builder(config="256", data_dir=str(tmp_path)).builder_config is (
      builder.builder_configs["256"])
  with pytest.raises(OptionError, match="got 'big'"):
    builder(config="big", data_dir=str(tmp_path))


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_building_and_reading_never_import_tensorflow(tmp_path):
  layouts.nih(tmp_path / "nih_chest_xray14", patients=8)
  for name in ("vinbig_cxr", "rsna_pneumonia", "siim_acr_pneumothorax"):
    layouts.LAYOUTS[name](tmp_path / name, images=8)
  downloads = {name: str(tmp_path / name) for name in build.REAL_DATASETS}
  result = _run("""
      import json, sys
      from otcxr_jax.data import build
      downloads, data_dir = json.loads(sys.argv[1]), sys.argv[2]
      sizes = {}
      for name, manual in downloads.items():
        build.build_dataset(name, config="32", data_dir=data_dir, manual_dir=manual)
        cls = build.builder_class(name)
        builder = cls(config=cls.config_for("32"), data_dir=data_dir)
        sizes[name] = {}
        for split in builder.info.splits:
          source = builder.as_data_source(split)
          sizes[name][split] = sorted({source[i]["image"].shape for i in range(len(source))})
      tf = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
      print(json.dumps({"sizes": sizes, "tensorflow_modules": tf}))
      """, json.dumps(downloads), str(tmp_path / "data"))
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["tensorflow_modules"] == []
  assert set(out["sizes"]) == set(downloads)
  for splits in out["sizes"].values():
    assert len(splits) == 5 and all(shapes == [[32, 32, 1]] for shapes in splits.values())


def test_tfds_build_command(rsna_download, tmp_path):
  manual, truth = rsna_download
  result = subprocess.run(
      [sys.executable, "-m", "otcxr_jax.data.build", "tfds_builders/rsna_pneumonia",
       f"--manual_dir={manual}", f"--data_dir={tmp_path}", "--config=256"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  version_dir = tmp_path / "rsna_pneumonia" / "256" / "1.0.0"
  report = BuildReport.read(version_dir)
  assert sum(report.splits[s].images for s in ("train", "validation", "test")) == len(truth.labels)
  assert len(list(version_dir.glob("rsna_pneumonia-train.array_record-*"))) == 1
  info = json.loads((version_dir / "dataset_info.json").read_text())
  assert info["fileFormat"] == "array_record"
