"""The synthetic_cxr TFDS builder and the TensorFlow-free data source over it: byte-identical
rebuilds, patient-disjoint splits, records equal to the phantoms they store, configs, errors."""

import json
import logging
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from otcxr_jax.data import tfds_source
from tfds_builders.cxr_base import parallel
from tfds_builders.synthetic_cxr import phantom
from tfds_builders.synthetic_cxr import CLASS_NAMES, Builder, SyntheticCxrConfig
from tfds_builders.synthetic_cxr import synthetic_cxr_dataset_builder as scb

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = dict(name="tiny", resolution=64, num_patients=40, seed=3)
SPLITS = ("train", "validation", "test", "train_1pct", "train_10pct")

_BUILD_AND_READ = """
    import json, sys
    from otcxr_jax.data import tfds_source
    from tfds_builders.synthetic_cxr import SyntheticCxrConfig
    config = SyntheticCxrConfig(**json.loads(sys.argv[1]))
    tfds_source.ensure_built("synthetic_cxr", data_dir=sys.argv[2], config=config)
    out = {}
    for split in %r:
      source = tfds_source.data_source("synthetic_cxr", split, data_dir=sys.argv[2], config=config)
      out[split] = [source[i]["image_id"].decode() for i in range(len(source))]
    print(json.dumps({"ids": out, "tensorflow": "tensorflow" in sys.modules}))
""" % (SPLITS,)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The tiny config built and read back in a fresh interpreter (data_dir, what it read)."""
  data_dir = tmp_path_factory.mktemp("first")
  result = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(_BUILD_AND_READ), json.dumps(TINY), str(data_dir)],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return data_dir, json.loads(result.stdout.strip().splitlines()[-1])


def test_building_and_reading_never_import_tensorflow(built):
  _, read = built
  assert read["tensorflow"] is False
  assert all(read["ids"][split] for split in SPLITS)


def _records(data_dir: pathlib.Path) -> dict[str, bytes]:
  """``{file name: bytes}`` of the tiny config's ArrayRecord files below ``data_dir``."""
  paths = sorted((data_dir / "synthetic_cxr" / "tiny" / "1.0.0").glob("*.array_record-*"))
  return {p.name: p.read_bytes() for p in paths}


def test_rebuild_in_another_directory_is_byte_identical(built, tmp_path, capsys):
  first, _ = built
  tfds_source.ensure_built("synthetic_cxr", data_dir=tmp_path, config=SyntheticCxrConfig(**TINY))
  a, b = _records(first), _records(tmp_path)
  assert list(a) == list(b) and len(a) == len(SPLITS)
  for name in a:
    assert a[name] == b[name], name
  # A prepared dataset is found, not rebuilt.
  capsys.readouterr()
  paths = sorted((tmp_path / "synthetic_cxr" / "tiny" / "1.0.0").glob("*.array_record-*"))
  mtimes = [p.stat().st_mtime_ns for p in paths]
  tfds_source.ensure_built("synthetic_cxr", data_dir=tmp_path, config=SyntheticCxrConfig(**TINY))
  assert "found" in capsys.readouterr().out
  assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_rendering_processes_write_the_same_bytes(built, tmp_path, monkeypatch):
  first, _ = built
  monkeypatch.setattr(parallel, "MIN_RECORDS", 1)  # the tiny cohort's images go to the workers
  Builder(config=SyntheticCxrConfig(**TINY), data_dir=str(tmp_path),
          processes=2).download_and_prepare()
  assert _records(tmp_path) == _records(first)


def test_a_build_prints_its_own_progress_not_tfds_bars_or_expected_warnings(tmp_path, capsys,
                                                                            caplog):
  caplog.set_level(logging.WARNING)
  tfds_source.ensure_built("synthetic_cxr", data_dir=tmp_path, config=SyntheticCxrConfig(**TINY))
  err = capsys.readouterr().err
  assert "synthetic_cxr/tiny train: " in err and "images/s, ETA" in err
  assert "Generating" not in err and "Shuffling" not in err
  expected = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith(("Using custom data configuration", "Variant folder"))]
  assert expected == []


def test_splits_are_patient_disjoint_and_cover_the_cohort(built):
  _, read = built
  cohort = phantom.sample_cohort(TINY["num_patients"], TINY["seed"])
  patients = {s: {i.split("_")[0] for i in read["ids"][s]} for s in SPLITS}
  assert not patients["train"] & patients["validation"]
  assert not patients["train"] & patients["test"]
  assert not patients["validation"] & patients["test"]
  assert patients["train"] | patients["validation"] | patients["test"] == {
      cohort.patient_id(p) for p in range(cohort.num_patients)}
  assert len(patients["validation"]) == len(patients["test"]) == 4  # 10% of 40 patients
  ids = {s: set(read["ids"][s]) for s in SPLITS}
  assert sum(len(ids[s]) for s in ("train", "validation", "test")) == cohort.num_images
  assert ids["train_1pct"] <= ids["train_10pct"] <= ids["train"]
  # Whole patients in the label fractions too.
  for s in ("train_1pct", "train_10pct"):
    for p in patients[s]:
      assert {i for i in ids["train"] if i.startswith(p + "_")} <= ids[s]


def test_records_decode_to_the_phantoms_they_store(built):
  data_dir, _ = built
  config = SyntheticCxrConfig(**TINY)
  cohort = phantom.sample_cohort(TINY["num_patients"], TINY["seed"])
  render = phantom.Renderer(TINY["resolution"])
  source = tfds_source.data_source("synthetic_cxr", "validation", data_dir=data_dir, config=config)
  assert len(source) > 0
  for k in range(len(source)):
    record = source[k]
    image_id = record["image_id"].decode()
    expected = render(cohort, scb.image_index(image_id))
    np.testing.assert_array_equal(record["image"], expected["image"])
    np.testing.assert_array_equal(record["mask"][:, :, 0], expected["mask"])
    np.testing.assert_array_equal(record["labels"], expected["labels"])
    np.testing.assert_array_equal(record["boxes"].reshape(-1, 4), expected["boxes"])
    np.testing.assert_array_equal(record["box_labels"].reshape(-1), expected["box_labels"])
    assert record["patient_id"].decode() == expected["patient_id"]
    assert record["view"].decode() == expected["view"]
    np.testing.assert_array_equal(record["original_size"], [64, 64])
  builder = tfds_source.ensure_built("synthetic_cxr", data_dir=data_dir, config=config)
  assert tuple(builder.info.metadata["class_names"]) == CLASS_NAMES == phantom.CLASS_NAMES


def test_predefined_configs_hold_about_ten_thousand_images():
  configs = Builder.builder_configs
  assert sorted(configs, key=int) == ["64", "128", "224", "256"]
  assert all(c.resolution == int(name) for name, c in configs.items())
  assert Builder.DEFAULT_CONFIG_NAME == "128"
  num_images = phantom.sample_cohort(configs["128"].num_patients, configs["128"].seed).num_images
  assert 9_500 <= num_images <= 10_500


def test_config_validation_and_lookup():
  assert Builder.config_for("64") is Builder.builder_configs["64"]
  assert Builder.config_for(96).resolution == 96
  with pytest.raises(ValueError, match="resolution such as"):
    Builder.config_for("large")
  for field, value in (("resolution", 16), ("num_patients", 2), ("seed", -1), ("resolution", 1.5)):
    with pytest.raises(ValueError, match=f"SyntheticCxrConfig.{field}"):
      SyntheticCxrConfig(name="bad", **{field: value})


def test_data_source_errors(built, tmp_path):
  data_dir, _ = built
  config = SyntheticCxrConfig(**TINY)
  with pytest.raises(FileNotFoundError, match="not prepared"):
    tfds_source.data_source("synthetic_cxr", "train", data_dir=tmp_path, config=config)
  with pytest.raises(ValueError, match="no split 'val'"):
    tfds_source.data_source("synthetic_cxr", "train+val", data_dir=data_dir, config=config)
  both = tfds_source.data_source("synthetic_cxr", "validation+test[:2]", data_dir=data_dir,
                                 config=config)
  validation = tfds_source.data_source("synthetic_cxr", "validation", data_dir=data_dir,
                                       config=config)
  assert len(both) == len(validation) + 2
  with pytest.raises(ValueError, match="bare dataset name"):
    tfds_source.data_source("synthetic_cxr/64", "train", data_dir=data_dir)
