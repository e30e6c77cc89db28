"""The documented build commands run as a user runs them (docs/datasets.md), on every real
dataset's fixture download at 32 pixels: the entry point with its build config, and
``python -m otcxr_jax.data.build``. What they print and write, and how a build fails."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest

from builders import helpers, layouts
from otcxr_jax.data import build
from tfds_builders.cxr_base import BuildReport, splits

REPO = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
FRACTIONS = ("train_1pct", "train_10pct")


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=300)


def _main(name: str, manual: pathlib.Path, data_dir: pathlib.Path,
          *extra: str) -> subprocess.CompletedProcess:
  short = {"nih_chest_xray14": "nih", "vinbig_cxr": "vinbig", "rsna_pneumonia": "rsna",
           "siim_acr_pneumothorax": "siim"}[name]
  return _run("otcxr_jax.main", "--config", f"configs/build.py:dataset={short}",
              f"--config.data.manual_dir={manual}", "--config.data.config=32",
              f"--config.data.data_dir={data_dir}", *extra)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
  """A small fixture download per dataset, generated once."""
  cache = {}

  def get(name: str) -> tuple[pathlib.Path, layouts.Truth]:
    if name not in cache:
      manual = tmp_path_factory.mktemp(name) / "manual"
      size = {"patients": 8} if name == "nih_chest_xray14" else {"images": 8}
      cache[name] = manual, layouts.LAYOUTS[name](manual, **size)
    return cache[name]
  return get


def _check_built(version_dir: pathlib.Path, name: str, truth: layouts.Truth) -> BuildReport:
  """Every fixture image in one main split, five splits as TFDS recorded them, a clean report."""
  report = BuildReport.read(version_dir)
  assert (report.dataset, report.config, report.error) == (name, "32", None)
  assert (report.skipped, report.missing, report.boxes_outside) == ([], [], [])
  assert set(report.splits) == {*helpers.MAIN_SPLITS, *FRACTIONS}
  assert sum(report.splits[s].images for s in helpers.MAIN_SPLITS) == len(truth.labels)
  assert all(report.splits[s].images > 0 for s in report.splits)
  builder = build.builder_class(name)(config="32", data_dir=str(version_dir.parents[2]))
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      s: c.images for s, c in report.splits.items()}
  return report


@pytest.mark.parametrize("name", build.REAL_DATASETS)
def test_entry_point_builds_every_dataset(downloads, tmp_path, name):
  manual, truth = downloads(name)
  result = _main(name, manual, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  version_dir = tmp_path / name / "32" / "1.0.0"
  report = _check_built(version_dir, name, truth)
  counts = ", ".join(f"{s} {c.images}" for s, c in report.splits.items())
  summary = [line for line in result.stdout.splitlines() if line.startswith("[build_dataset]")]
  assert summary == [
      f"[build_dataset] {name}/32: {counts} images",
      "[build_dataset] 0 unreadable images skipped, 0 annotated images missing",
      f"[build_dataset] dataset: {version_dir}",
      f"[build_dataset] report: {version_dir / 'build_report.json'}",
  ]
  assert "Traceback" not in result.stderr
  assert f"{name}/32 train: " in result.stderr  # the builder's progress lines


def test_entry_point_reuses_a_built_dataset(downloads, tmp_path):
  manual, truth = downloads("rsna_pneumonia")
  assert _main("rsna_pneumonia", manual, tmp_path).returncode == 0
  shards = sorted((tmp_path / "rsna_pneumonia" / "32" / "1.0.0").glob("*.array_record-*"))
  stamps = [p.stat().st_mtime_ns for p in shards]
  again = _main("rsna_pneumonia", manual, tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "[build_dataset] rsna_pneumonia/32 (already built, not rebuilt): train " in again.stdout
  assert [p.stat().st_mtime_ns for p in shards] == stamps


@pytest.mark.parametrize("name", build.REAL_DATASETS)
def test_data_build_command_takes_any_resolution(downloads, tmp_path, name):
  manual, truth = downloads(name)
  result = _run("otcxr_jax.data.build", f"tfds_builders/{name}", f"--manual_dir={manual}",
                "--config=32", f"--data_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  _check_built(tmp_path / name / "32" / "1.0.0", name, truth)


def _corrupt_split(manual: pathlib.Path, truth: layouts.Truth, split: str) -> list[pathlib.Path]:
  """Overwrites every image the seeded split puts into ``split``; returns their paths."""
  patients = splits.group_by_patient(truth.patient)
  paths = [truth.files[i] for i in splits.split_patients(patients, splits.RANDOM_SPLIT)[split]]
  for path in paths:
    path.write_bytes(b"not an image")
  return paths


def _error_lines(stderr: str) -> list[str]:
  lines = stderr.strip().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("Error: "))
  return lines[start:]


def test_split_without_a_readable_image_is_one_line_and_a_report(downloads, tmp_path):
  source, truth = downloads("vinbig_cxr")
  manual = layouts.copy_tree(source, tmp_path / "manual")
  truth = dataclasses.replace(
      truth, files={i: manual / p.relative_to(source) for i, p in truth.files.items()})
  broken = _corrupt_split(manual, truth, "validation")
  result = _main("vinbig_cxr", manual, tmp_path / "data")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  report_path = tmp_path / "data" / "vinbig_cxr" / "32" / "1.0.0.failed" / "build_report.json"
  error, hint = _error_lines(result.stderr)
  assert error.startswith("Error: vinbig_cxr/32: no image of the validation split is readable")
  assert error.endswith(f"every skipped file and why: {report_path}")
  assert hint == "(run with --verbosity=1 for the traceback)"
  report = BuildReport.read(report_path.parent)
  assert sorted(s["path"] for s in report.skipped) == sorted(map(str, broken))
  assert report.error == error.removeprefix("Error: ")
  assert not (tmp_path / "data" / "vinbig_cxr" / "32" / "1.0.0").exists()


def test_data_build_command_errors(tmp_path):
  missing = tmp_path / "nowhere"
  args = ("otcxr_jax.data.build", "tfds_builders/siim_acr_pneumothorax",
          f"--manual_dir={missing}", "--config=32", f"--data_dir={tmp_path}")
  result = _run(*args)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert _error_lines(result.stderr) == [
      f"Error: siim_acr_pneumothorax: the manual directory {missing} does not exist. What to "
      "download and where its files go: docs/datasets.md, section `siim_acr_pneumothorax`.",
      "(run with --verbosity=1 for the traceback)"]
  verbose = _run(*args, "--verbosity=1")
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr
  assert "ManualDirError" in verbose.stderr
  bad = _run("otcxr_jax.data.build", "tfds_builders/siim_acr_pneumothorax",
             f"--manual_dir={missing}", "--config=big", f"--data_dir={tmp_path}")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert _error_lines(bad.stderr)[0] == (
      "Error: siim_acr_pneumothorax: config must be a resolution such as 224, 256, 512 (or any "
      "other integer >= 8); got 'big'")
