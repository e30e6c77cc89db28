"""The synthetic benchmark end to end at tiny scale: report.md against the files it read."""

import json
import math
import re

import numpy as np
import pytest

from benchmarks import benchmark_synthetic, synthetic_report
from otcxr_jax.training import loop
from configs import benchmark_synthetic as benchmark_config

RUNS = ("otcxr", "vicreg", "otcxr_location_mse")
ROWS = RUNS + ("random_init",)
TIMED = ("otcxr", "vicreg")
COLUMNS = {"linear probe AUC": "linear_probe", "kNN AUC": "knn"}
KNN_ROWS = ("otcxr", "random_init")  # benchmark.evaluation_rows: kNN of these rows only


def _config(data_dir):
  c = benchmark_config.get_config("tiny")
  c.data.data_dir = str(data_dir)
  c.benchmark.runs = RUNS
  c.benchmark.references = ("random_init",)
  c.benchmark.evaluations = ("linear_probe", "knn")
  c.benchmark.evaluation_rows = {"knn": KNN_ROWS, "segment": ("vicreg",)}  # segment: not run
  c.benchmark.timed_runs = TIMED
  c.lock()
  return c


def _table(markdown: str, heading: str = "") -> tuple[list[str], dict[str, list[str]]]:
  """Header and ``{first cell: other cells}`` of the first table after ``heading``."""
  lines = (markdown.split(heading, 1)[1] if heading else markdown).splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  rows = []
  for line in lines[start:]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
  header, body = rows[0], rows[2:]
  return header, {cells[0]: cells[1:] for cells in body}


def test_supervised_reference_gets_its_own_fields(tmp_path):
  config = _config(tmp_path)
  supervised = benchmark_synthetic.reference_config(config, "supervised")
  assert supervised.finetune.encoder_learning_rate == 1e-3
  assert config.finetune.encoder_learning_rate == 1e-5  # the shared config is left alone
  assert benchmark_synthetic.reference_config(config, "random_init").finetune.to_dict() == (
      config.finetune.to_dict())
  with config.unlocked():
    config.benchmark.supervised_fields = {"finetune": {"encoder_lr": 1e-3}}
    config.benchmark.references = ("supervised",)
  with pytest.raises(ValueError, match=r"supervised_fields\.finetune\.encoder_lr"):
    benchmark_synthetic.check(config)


def test_bad_benchmark_fields_are_refused(tmp_path):
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.runs = ("otcxr", "mocov3")
  with pytest.raises(ValueError, match=r"config\.benchmark\.runs names \['mocov3'\]"):
    benchmark_synthetic.check(config)
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark_runs.otcxr_no_cvsim.model.cvsmi = False
    config.benchmark.runs = ("otcxr_no_cvsim",)
    config.benchmark.timed_runs = None  # every run
  with pytest.raises(ValueError, match=r"benchmark_runs\.otcxr_no_cvsim\.model\.cvsmi"):
    benchmark_synthetic.check(config)
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.seeds = 0
  with pytest.raises(ValueError, match=r"config\.benchmark\.seeds=0"):
    benchmark_synthetic.check(config)
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.timed_runs = ("byol",)
  with pytest.raises(ValueError, match=r"config\.benchmark\.timed_runs names \['byol'\]"):
    benchmark_synthetic.check(config)
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.evaluation_rows = {"knn": ("otcxr", "vicregg")}
  with pytest.raises(ValueError, match=r"evaluation_rows\.knn names \['vicregg'\]"):
    benchmark_synthetic.check(config)
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.evaluation_rows = {"probe": ("otcxr",)}
  with pytest.raises(ValueError, match=r"evaluation_rows\.probe: no such evaluation"):
    benchmark_synthetic.check(config)


def test_tiny_flag_selects_the_tiny_config():
  argv = benchmark_synthetic.config_argv(["prog", "--tiny", "--workdir=w"])
  assert argv == ["prog", f"--config={benchmark_synthetic.DEFAULT_CONFIG}:tiny", "--workdir=w"]
  assert benchmark_synthetic.config_argv(["prog"])[1].endswith("benchmark_synthetic.py")
  with pytest.raises(ValueError, match="either --tiny or --config"):
    benchmark_synthetic.config_argv(["prog", "--tiny", "--config=configs/demo.py"])


def test_cells_show_mean_and_sample_std():
  # Three seeds 0.5, 0.6, 0.7: mean 0.6, sample std 0.1; one undefined of three seeds.
  table = synthetic_report.Table(rows=["a", "b"], columns=["m"],
                                 values={"a": {"m": [0.5, 0.6, 0.7]},
                                         "b": {"m": [0.9, math.nan, 0.7]}}, sources=[])
  assert synthetic_report.format_cell(*table.stats("a", "m"), seeds=3) == "0.600 ± 0.100"
  assert synthetic_report.format_cell(*table.stats("b", "m"), seeds=3) == "0.800 ± 0.141 (n=2)"
  _, rows = _table(synthetic_report.markdown_results(table, seeds=3))
  assert rows == {"a": ["0.600 ± 0.100"], "b": ["**0.800 ± 0.141 (n=2)**"]}
  # With intervals: mean -+ t(0.975, n - 1) std / sqrt(n); t = 4.303 (n = 3), 12.706 (n = 2).
  _, rows = _table(synthetic_report.markdown_results(table, seeds=3, intervals=True))
  half_a, half_b = 4.3027 * 0.1 / 3 ** 0.5, 12.7062 * (0.2 / 2 ** 0.5) / 2 ** 0.5
  assert rows == {"a": [f"0.600 ± 0.100 [{0.6 - half_a:.3f}, {0.6 + half_a:.3f}]"],
                  "b": [f"**0.800 ± 0.141 [{0.8 - half_b:.3f}, {0.8 + half_b:.3f}] (n=2)**"]}


def test_localisation_reads_the_rows_classifier_and_needs_it_first(tmp_path):
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.evaluations = ("linear_probe", "finetune_10pct", "localize")
    config.benchmark.evaluation_rows = {"finetune_10pct": ("otcxr", "vicreg"),
                                        "localize": ("otcxr", "vicreg")}
  benchmark_synthetic.check(config)
  row_dir = tmp_path / "runs" / "otcxr" / "seed0"
  otcxr = benchmark_synthetic.evaluation_config(
      benchmark_synthetic.run_config(config, "otcxr", 0), "localize", "/ck/otcxr", row_dir)
  assert otcxr.localize.classifier_workdir == str(row_dir / "finetune_10pct")
  assert otcxr.localize.methods == ("cam", "attention", "transport")
  assert (otcxr.localize.init, otcxr.localize.checkpoint_dir) == ("pretrained", "/ck/otcxr")
  vicreg = benchmark_synthetic.evaluation_config(
      benchmark_synthetic.run_config(config, "vicreg", 0), "localize", "/ck/vicreg", row_dir)
  assert vicreg.localize.methods == ("cam",)  # no CV-SIM or transport plan to map
  no_cvsim = benchmark_synthetic.evaluation_config(
      benchmark_synthetic.run_config(config, "otcxr_no_cvsim", 0), "localize", None, row_dir)
  assert no_cvsim.localize.methods == ("cam", "transport") and no_cvsim.localize.init == "random"
  with config.unlocked():
    config.benchmark.evaluation_rows = {"finetune_10pct": ("otcxr",),
                                        "localize": ("otcxr", "vicreg")}
  with pytest.raises(ValueError, match=r"'localize' of row 'vicreg' reads the workdir of "
                                       r"'finetune_10pct'"):
    benchmark_synthetic.check(config)
  with config.unlocked():
    config.benchmark.evaluation_rows = {}
    config.benchmark.evaluations = ("localize", "finetune_10pct")
  with pytest.raises(ValueError, match=r"expected 'finetune_10pct' before it"):
    benchmark_synthetic.check(config)


def test_per_class_tables_sit_beside_the_headline(tmp_path):
  """Hand-written metrics.json files of two seeds: each AUC evaluation gets a table of its mean
  AUC and each class, mean ± sample std over the seeds, on the rows it runs on only."""
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.seeds = 2
    config.benchmark.timed_runs = ()
  classes = ("atelectasis", "edema")
  values = {  # (row, evaluation): per seed, (mean AUC, atelectasis, edema)
      ("otcxr", "linear_probe"): [(0.6, 0.5, 0.7), (0.7, 0.6, 0.8)],
      ("vicreg", "linear_probe"): [(0.65, 0.7, 0.6), (0.65, 0.7, 0.6)],
      ("otcxr_location_mse", "linear_probe"): [(0.5, 0.5, None), (0.6, 0.6, 0.6)],
      ("random_init", "linear_probe"): [(0.55, 0.55, 0.55)],  # seed 1 missing
      ("otcxr", "knn"): [(0.52, 0.54, 0.5), (0.54, 0.5, 0.54)],
      ("random_init", "knn"): [(0.51, 0.52, 0.5), (0.53, 0.56, 0.5)],
  }
  for (row, evaluation), seeds in values.items():
    for seed, (mean, *per_class) in enumerate(seeds):
      path = synthetic_report.metrics_path(tmp_path, row, seed, evaluation)
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps({"test": {"mean_auc": mean,
                                           "per_class_auc": dict(zip(classes, per_class))}}))
  text = synthetic_report.write_report(config, tmp_path).read_text()
  assert text.index("## Results") < text.index("## Per-class AUC") < text.index("## Runtime")
  header, rows = _table(text, "### linear probe AUC")
  assert header == ["run", "linear probe AUC", *classes]
  assert rows == {
      "otcxr": ["0.650 ± 0.071", "0.550 ± 0.071", "**0.750 ± 0.071**"],
      "vicreg": ["**0.650 ± 0.000**", "**0.700 ± 0.000**", "0.600 ± 0.000"],
      "otcxr_location_mse": ["0.550 ± 0.071", "0.550 ± 0.071", "0.600 (n=1)"],
      "random_init": ["0.550 (n=1)", "0.550 (n=1)", "0.550 (n=1)"],
  }
  header, rows = _table(text, "### kNN AUC")
  assert header == ["run", "kNN AUC", *classes]
  assert rows == {"otcxr": ["**0.530 ± 0.014**", "0.520 ± 0.028", "**0.520 ± 0.028**"],
                  "random_init": ["0.520 ± 0.014", "**0.540 ± 0.028**", "0.500 ± 0.000"]}
  # The headline column is the results table's.
  _, results = _table(text, "## Results")
  half = 12.7062 * (0.1 / 2 ** 0.5) / 2 ** 0.5  # t(0.975, 1) * std / sqrt(2)
  assert results["otcxr"][0] == f"0.650 ± 0.071 [{0.65 - half:.3f}, {0.65 + half:.3f}]"
  assert synthetic_report.collect_per_class(config, tmp_path, "segment") is None


def test_feature_spread_table_reads_the_probes_that_recorded_it(tmp_path):
  """Hand-written linear-probe metrics.json files of two seeds: the feature spread of each
  encoder, mean ± sample std over the seeds that recorded one (a file of an older probe has
  none), 4 decimals, nothing in bold; raw pixels have no encoder."""
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.seeds = 2
    config.benchmark.timed_runs = ()
    config.benchmark.references = ("random_init", "raw_pixels")
  spreads = {  # row: per seed, (position share, image share, pooled std/|mean|) or None
      "otcxr": [(0.999, 0.0001, 0.004), (0.997, 0.0003, 0.006)],
      "vicreg": [(0.7, 0.07, 0.25), None],
      "random_init": [(0.826, 0.010, 0.110), (0.826, 0.010, 0.110)],
      "raw_pixels": [None, None],
  }
  for row, seeds in spreads.items():
    for seed, spread in enumerate(seeds):
      path = synthetic_report.metrics_path(tmp_path, row, seed, "linear_probe")
      path.parent.mkdir(parents=True, exist_ok=True)
      metrics = {"test": {"mean_auc": 0.6, "per_class_auc": {}}}
      if spread:
        metrics["feature_spread"] = dict(zip(
            ("position_share", "image_share", "pooled_std_over_mean"), spread),
            interaction_share=1 - spread[0] - spread[1])
      path.write_text(json.dumps(metrics))
  text = synthetic_report.write_report(config, tmp_path).read_text()
  assert text.index("## Per-class AUC") < text.index("## What the features carry") < text.index(
      "## Runtime")
  header, rows = _table(text, "## What the features carry")
  assert header == ["run", "position share", "image share", "pooled std/\\|mean\\|"]
  assert rows == {
      "otcxr": ["0.9980 ± 0.0014", "0.0002 ± 0.0001", "0.0050 ± 0.0014"],
      "vicreg": ["0.7000 (n=1)", "0.0700 (n=1)", "0.2500 (n=1)"],
      "random_init": ["0.8260 ± 0.0000", "0.0100 ± 0.0000", "0.1100 ± 0.0000"],
  }
  for row in spreads:
    for seed in range(2):
      synthetic_report.metrics_path(tmp_path, row, seed, "linear_probe").write_text(
          json.dumps({"test": {"mean_auc": 0.6, "per_class_auc": {}}}))
  assert "No linear-probe run recorded the feature spread." in (
      synthetic_report.write_report(config, tmp_path).read_text())


def test_default_scale_is_128_with_an_8x8_dense_map():
  """The default runs where docs/finding_contrast puts it: 128x128, an 8x8 map (small stem of
  stride 2, last stage at 16), VICRegL's 20 + 4 of 49 cells scaled to 64, and the cohort whose
  test split fits the ±0.015 interval; tiny keeps its 2x2 map."""
  from otcxr_jax import config_lib
  from otcxr_jax.models import factory
  c = benchmark_config.get_config()
  assert (c.data.config, c.data.image_size) == ("128", 128)
  assert factory.dense_grid(c) == (8, 8)
  assert tuple(c.vicregl.num_matches) == (round(20 / 49 * 64), round(4 / 49 * 64)) == (26, 5)
  assert c.data.synthetic_patients == benchmark_config.SYNTHETIC_PATIENTS == 10000
  c.method = "vicregl"
  config_lib.validate(c)
  tiny = benchmark_config.get_config("tiny")
  assert factory.dense_grid(tiny) == (2, 2) and tiny.data.synthetic_patients == 16


def test_gpu_scale_is_the_full_width_encoder_for_about_twenty_epochs():
  import jax
  from flax import nnx
  from otcxr_jax import config_lib, methods
  from otcxr_jax.models import factory
  c = benchmark_config.get_config("gpu")
  default = benchmark_config.get_config()
  assert (c.model.width, c.model.num_stages, c.data.image_size) == (1.0, default.model.num_stages, 128)
  assert factory.dense_grid(c) == (8, 8)
  epochs = c.train.num_steps * c.train.batch_size / benchmark_config.TRAIN_IMAGES
  assert 20 <= epochs < 21
  assert c.train.compute_dtype == "bfloat16" and tuple(c.benchmark.timed_runs) == ()
  assert tuple(c.benchmark.runs) == tuple(default.benchmark.runs) and c.benchmark.seeds == 3
  for run in c.benchmark.runs:  # every run's config is accepted before any compute
    rc = benchmark_synthetic.copy_config(c)
    benchmark_synthetic.apply_overrides(rc, c.benchmark_runs[run], run)
    config_lib.validate(rc)
  model = methods.build_model(c, nnx.Rngs(0))
  model.eval()
  x = jax.ShapeDtypeStruct((2, 128, 128, 1), np.float32)
  features = jax.eval_shape(lambda m, a: m.encoder(a), model, x)
  assert features.dense.shape == (2, 8, 8, 256)  # full width: 256 channels at the last of three stages
  with pytest.raises(ValueError, match="'tiny', 'gpu' or none"):
    benchmark_config.get_config("huge")


def test_paired_comparisons_read_the_saved_test_scores(tmp_path):
  """Hand-written test scores of two seeds: the first run minus every other row, its mean over
  the seeds against scikit-learn's AUC, the seeds ahead, and the report's table."""
  from sklearn.metrics import roc_auc_score
  from otcxr_jax.evaluation import score_files
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.seeds = 2
    config.benchmark.timed_runs = ()
    config.benchmark.evaluation_rows = {"knn": KNN_ROWS}
  rng = np.random.default_rng(0)
  labels = (rng.random((200, 2)) < 0.4).astype(np.float32)
  noise = {"otcxr": 0.5, "vicreg": 1.0, "otcxr_location_mse": 0.4, "random_init": 3.0}
  scores = {}
  for row in ROWS:
    for seed in range(2):
      if (row, seed) == ("random_init", 1):
        continue  # a missing seed: compared over seed 0 only
      s = labels + rng.normal(scale=noise[row], size=labels.shape)
      scores[row, seed] = s
      folder = synthetic_report.metrics_path(tmp_path, row, seed, "linear_probe").parent
      score_files.save_scores(folder, labels, s, ("atelectasis", "edema"))
  comparisons = synthetic_report.paired_comparisons(config, tmp_path, num_samples=100)
  assert [(c.evaluation, c.reference, c.row) for c in comparisons] == [
      ("linear_probe", "otcxr", row) for row in ROWS[1:]]  # kNN saves no scores
  mean_auc = lambda s: np.mean([roc_auc_score(labels[:, k], s[:, k]) for k in range(2)])
  for c in comparisons:
    seeds = (0,) if c.row == "random_init" else (0, 1)
    expected = [mean_auc(scores["otcxr", k]) - mean_auc(scores[c.row, k]) for k in seeds]
    np.testing.assert_allclose(c.per_seed, expected, atol=1e-6)
    assert c.difference == pytest.approx(np.mean(expected))
    assert c.test_interval[0] <= c.difference <= c.test_interval[1]
  by_row = {c.row: c for c in comparisons}
  assert by_row["random_init"].test_interval[0] > 0  # far noisier scores: OTCXR clearly ahead
  assert math.isnan(by_row["random_init"].seed_interval[0])  # one seed: no interval over seeds
  assert by_row["otcxr_location_mse"].difference < 0  # less noise than OTCXR's
  text = synthetic_report.write_report(config, tmp_path).read_text()
  lines = [line for line in text.split("## Paired comparisons", 1)[1].splitlines()
           if line.startswith("| linear probe AUC")]
  cells = {row: [x.strip() for x in line.strip("|").split("|")] for row, line in zip(ROWS[1:],
                                                                                      lines)}
  assert len(lines) == 3
  for c in synthetic_report.paired_comparisons(config, tmp_path):  # the report's resamples
    row = c.row
    assert cells[row][1:4] == [f"otcxr minus {row}", f"{c.difference:+.3f}",
                               f"[{c.test_interval[0]:+.3f}, {c.test_interval[1]:+.3f}]"]
    assert cells[row][5] == f"{sum(d > 0 for d in c.per_seed)} of {len(c.per_seed)}"
  assert cells["random_init"][4] == "n/a"


def test_raw_pixels_reference_is_a_linear_probe_of_pixels(tmp_path):
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.references = ("random_init", "raw_pixels")
  benchmark_synthetic.check(config)
  layout = synthetic_report.layout(config)
  assert [e for row, e in layout if row == "raw_pixels"] == ["linear_probe"]  # no kNN of pixels
  c = benchmark_synthetic.evaluation_config(
      benchmark_synthetic.reference_config(config, "raw_pixels"), "linear_probe", None,
      init=benchmark_synthetic.REFERENCE_INITS["raw_pixels"])
  assert (c.mode, c.probe.init, c.probe.checkpoint_dir) == ("linear_probe", "pixels", "")
  random = benchmark_synthetic.evaluation_config(
      benchmark_synthetic.reference_config(config, "random_init"), "knn", None)
  assert random.probe.init == "random"
  with config.unlocked():
    config.benchmark.evaluations = ("knn",)
  assert [e for row, e in synthetic_report.layout(config) if row == "raw_pixels"] == []


def test_a_preempted_benchmark_says_how_to_resume(tmp_path, monkeypatch, capsys):
  def preempted(config, workdir):
    raise loop.Preempted(62, tmp_path / "runs/vicreg/seed0/pretrain/checkpoints/pretrain")

  monkeypatch.setattr(benchmark_synthetic, "run", preempted)
  args = ["--workdir", str(tmp_path), "--config.benchmark.runs=('otcxr', 'vicreg')"]
  status = benchmark_synthetic.run_resumable(_config(tmp_path), str(tmp_path), args)
  out = capsys.readouterr().out
  assert status == 0 and "preempted at step 62; checkpoint saved in" in out
  assert out.strip().endswith("resumes the benchmark where it stopped: python "
                              f"benchmarks/benchmark_synthetic.py --workdir {tmp_path} "
                              "'--config.benchmark.runs=('\"'\"'otcxr'\"'\"', '\"'\"'vicreg'\"'\"')'")


def test_map_probe_reads_the_dense_map_and_skips_the_pixels(tmp_path):
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.references = ("random_init", "raw_pixels")
    config.benchmark.evaluations = ("linear_probe", "linear_probe_map")
  benchmark_synthetic.check(config)
  layout = synthetic_report.layout(config)
  assert [e for row, e in layout if row == "raw_pixels"] == ["linear_probe"]
  assert [e for row, e in layout if row == "otcxr"] == ["linear_probe", "linear_probe_map"]
  shared = benchmark_synthetic.run_config(config, "otcxr", 0)
  pooled, dense = (benchmark_synthetic.evaluation_config(shared, e, "/ckpt")
                   for e in ("linear_probe", "linear_probe_map"))
  assert (pooled.probe.readout, dense.probe.readout) == ("pooled", "map")
  assert dense.mode == "linear_probe" and dense.probe.checkpoint_dir == "/ckpt"
  assert config.probe.readout == "pooled"  # the shared config is not changed
  assert synthetic_report.collect(config, tmp_path).columns == [
      "linear probe AUC", "linear probe AUC (dense map)"]


def test_map_probe_is_compared_with_the_probe_of_the_pixels(tmp_path):
  """The dense-map probe of each run against the pixel row's one probe (the floor of any linear
  readout of the image), against scikit-learn's AUC on hand-written scores."""
  from sklearn.metrics import roc_auc_score
  from otcxr_jax.evaluation import score_files
  config = _config(tmp_path)
  with config.unlocked():
    config.benchmark.runs = ("otcxr", "vicreg")
    config.benchmark.references = ("raw_pixels",)
    config.benchmark.evaluations = ("linear_probe", "linear_probe_map")
    config.benchmark.seeds = 1
  rng = np.random.default_rng(1)
  labels = (rng.random((150, 2)) < 0.4).astype(np.float32)
  scores = {}
  for row, e, noise in [("otcxr", "linear_probe", 2.0), ("otcxr", "linear_probe_map", 0.5),
                        ("vicreg", "linear_probe", 2.0), ("vicreg", "linear_probe_map", 1.0),
                        ("raw_pixels", "linear_probe", 1.5)]:
    scores[row, e] = labels + rng.normal(scale=noise, size=labels.shape)
    score_files.save_scores(synthetic_report.metrics_path(tmp_path, row, 0, e).parent, labels,
                            scores[row, e], ("atelectasis", "edema"))
  comparisons = synthetic_report.paired_comparisons(config, tmp_path, num_samples=50)
  assert [(c.evaluation, c.row) for c in comparisons] == [
      ("linear_probe", "vicreg"), ("linear_probe", "raw_pixels"),
      ("linear_probe_map", "vicreg"), ("linear_probe_map", "raw_pixels")]
  mean_auc = lambda s: np.mean([roc_auc_score(labels[:, k], s[:, k]) for k in range(2)])
  pixels = comparisons[3]
  assert pixels.per_seed[0] == pytest.approx(
      mean_auc(scores["otcxr", "linear_probe_map"]) - mean_auc(scores["raw_pixels", "linear_probe"]),
      abs=1e-6)
  assert pixels.difference > 0 > comparisons[1].difference  # the map probe above the pixels
