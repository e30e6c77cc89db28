"""The evaluation report: tables equal to the runs' metrics.json, valid PNG figures, the mode and
the command line, and refused inputs."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from otcxr_jax import config_lib, modes
from otcxr_jax.evaluation import localization, score_files
from otcxr_jax.reporting import runs as report
from otcxr_jax.reporting import summary

CLASSES = ("atelectasis", "effusion", "nodule")


def _png(path, size=(24, 16)):
  Image.fromarray(np.full(size[::-1], 128, np.uint8)).save(path)


def _classification_run(root, name, mode, seed, *, fraction=None, init="pretrained",
                        scores=True):
  rng = np.random.default_rng(seed)
  labels = (rng.uniform(size=(60, 3)) < 0.4).astype(np.float32)
  labels[:, 2] = 0.0  # nodule: no positive, its AUC is undefined
  probabilities = np.clip(labels * 0.3 + rng.uniform(size=labels.shape), 0, 1)
  result = {"mode": mode, "init": init,
            "test": summary.auc_summary(labels, probabilities, CLASSES, num_samples=50)}
  if mode == "finetune":
    result.update(split={0.01: "train_1pct", 0.1: "train_10pct", 1.0: "train"}[fraction],
                  label_fraction=fraction)
  workdir = root / name
  summary.write_metrics(workdir, result)
  (workdir / "config.json").write_text(json.dumps({"data": {"name": "synthetic_cxr",
                                                             "config": "64"}}))
  if scores:
    score_files.save_scores(workdir, labels, probabilities, CLASSES)
  return workdir, result


def _segment_run(root):
  result = {"mode": "segment", "init": "random", "dataset": "siim_acr_pneumothorax/224",
            "test": {"dice_all": 0.8123, "dice_positive": 0.4567, "num_images": 40,
                     "num_positive": 9},
            "examples_figure": "segment_examples.png"}
  summary.write_metrics(root / "segment", result)
  _png(root / "segment" / "segment_examples.png")
  return root / "segment", result


def _localize_run(root):
  truths = [localization.box_mask(np.array([[0.0, 0.0, 0.5, 0.5]]), 4),
            localization.box_mask(np.array([[0.5, 0.5, 1.0, 1.0]]), 4)]
  heat = np.zeros((2, 4, 4))
  heat[0, 0, 0] = heat[1, 0, 0] = 1.0
  scores = localization.score_instances(heat, truths, mode="fraction_of_max", value=0.5)
  methods = {m: {"source": {"init": init}, **localization.summarise(scores, labels, CLASSES)}
             for m, init, labels in (("cam", "pretrained", [0, 1]),
                                     ("transport", "random", [1, 1]))}
  result = {"mode": "localize", "dataset": "synthetic_cxr/64", "threshold_mode": "top_fraction",
            "threshold": 0.1, "methods": methods, "figure": "localize_examples.png"}
  summary.write_metrics(root / "localize", result)
  _png(root / "localize" / "localize_examples.png")
  return root / "localize", result


@pytest.fixture
def runs(tmp_path):
  out = {"linear_probe": _classification_run(tmp_path, "linear_probe", "linear_probe", 0),
         "knn": _classification_run(tmp_path, "knn", "knn", 1, init="random", scores=False)}
  for i, (fraction, init) in enumerate([(f, i) for i in ("pretrained", "random")
                                        for f in (0.01, 0.1, 1.0)]):
    out[f"ft_{fraction:g}_{init}"] = _classification_run(
        tmp_path, f"ft_{fraction:g}_{init}", "finetune", 10 + i, fraction=fraction, init=init)
  out["segment"] = _segment_run(tmp_path)
  out["localize"] = _localize_run(tmp_path)
  return out


def _tables(text: str) -> dict[str, list[list[str]]]:
  """Markdown tables of ``text`` keyed by their header row (cells joined by '|')."""
  tables, current = {}, None
  for line in text.splitlines():
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      if current is None:
        current = tables.setdefault("|".join(cells), [])
      elif not set("".join(cells)) <= {"-"}:
        current.append(cells)
    else:
      current = None
  return tables


def _fmt(x):
  return "undefined" if x is None else f"{x:.3f}"


def test_tables_equal_the_metrics_and_figures_are_pngs(runs, tmp_path):
  out = tmp_path / "report"
  path = report.write_report([w for w, _ in runs.values()], out)
  text = path.read_text()
  tables = _tables(text)

  main = {row[0]: row for row in tables["run|mode|dataset|encoder|labels|test mean AUC|95% CI|"
                                        "test images"]}
  classification = [k for k in runs if k not in ("segment", "localize")]
  assert list(main) == classification
  for name in classification:
    result = runs[name][1]
    t = result["test"]
    lo, hi = t["mean_auc_ci95"]
    labels = ("train (frozen encoder)" if result["mode"] != "finetune" else
              f"{result['split']} ({100 * result['label_fraction']:g}%)")
    assert main[name] == [name, result["mode"], "synthetic_cxr/64", result["init"], labels,
                          f"**{t['mean_auc']:.3f}**", f"[{lo:.3f}, {hi:.3f}]", "60"]

  per_class = tables["class|" + "|".join(classification)]
  assert [row[0] for row in per_class] == [*CLASSES, "**mean**"]
  for j, name in enumerate(classification, start=1):
    t = runs[name][1]["test"]
    assert [row[j] for row in per_class] == [_fmt(t["per_class_auc"][c]) for c in CLASSES] + [
        _fmt(t["mean_auc"])]
  assert per_class[2][1] == "undefined"

  segment = tables["run|dataset|encoder|Dice (all images)|Dice (positive images)|images|"
                   "positive images"]
  assert segment == [["segment", "siim_acr_pneumothorax/224", "random", "**0.812**", "0.457",
                      "40", "9"]]

  loc = runs["localize"][1]["methods"]
  rows = tables["run|dataset|method|maps of|pointing game|IoU|chance|instances"]
  assert rows == [["localize", "synthetic_cxr/64", m, loc[m]["source"]["init"],
                   f"**{loc[m]['pointing_game']:.3f}**", _fmt(loc[m]["iou"]),
                   _fmt(loc[m]["chance"]), str(loc[m]["num_instances"])] for m in loc]
  assert rows[0][4] == "**0.500**"  # hand: cam hits class 0's box, misses class 1's
  per_class_loc = tables["class|cam|transport"]
  assert per_class_loc == [
      ["atelectasis", "1.000 / " + _fmt(loc["cam"]["per_class"]["atelectasis"]["iou"]), ""],
      ["effusion", "0.000 / 0.000", "0.500 / " + _fmt(loc["transport"]["per_class"]
                                                       ["effusion"]["iou"])]]

  figures = sorted(p.name for p in (out / "figures").iterdir())
  expected = ["auc_per_class_1.png", "dice.png", "label_fraction_1.png",
              "localize_examples_localize.png", "roc_linear_probe.png",
              "segment_examples_segment.png"] + [f"roc_ft_{f}_{i}.png" for i in
                                                 ("pretrained", "random") for f in (0.01, 0.1, 1)]
  assert figures == sorted(expected)  # no ROC figure for the kNN run: it saved no scores
  for name in figures:
    with Image.open(out / "figures" / name) as png:
      png.verify()
      assert png.format == "PNG"
  linked = re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\)", text)
  assert sorted(linked) == sorted(expected)


def test_missing_runs_are_listed_and_bad_inputs_refused(runs, tmp_path, capsys):
  linear_probe, _ = runs["linear_probe"]
  path = report.write_report([linear_probe, tmp_path / "not_run"], tmp_path / "out")
  assert f"Not run (no `metrics.json`): `{tmp_path / 'not_run'}`." in path.read_text()
  assert report.main([str(tmp_path / "not_run"), "--out", str(tmp_path / "x")]) == 2
  assert "none of the workdirs holds a metrics.json" in capsys.readouterr().err
  summary.write_metrics(tmp_path / "pretrain", {"mode": "pretrain"})
  with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'pretrain' / 'metrics.json'} is "
                                                 f"of mode 'pretrain'")):
    report.write_report([linear_probe, tmp_path / "pretrain"], tmp_path / "out")
  with pytest.raises(ValueError, match="given more than once"):
    report.write_report([linear_probe, linear_probe], tmp_path / "out")
  c = config_lib.base_config()
  c.mode = "report"
  with pytest.raises(config_lib.ConfigError,
                     match=re.escape("config.report.workdirs=(): expected a non-empty tuple")):
    modes.validate(c)


def test_saved_scores_round_trip(tmp_path):
  labels = np.array([[0, 1], [1, 0]], np.float32)
  scores = np.array([[0.2, 0.9], [0.7, 0.1]], np.float32)
  assert score_files.load_scores(tmp_path) is None
  score_files.save_scores(tmp_path, labels, scores, ["a", "b"])
  saved = score_files.load_scores(tmp_path)
  np.testing.assert_array_equal(saved.labels, labels)
  np.testing.assert_array_equal(saved.scores, scores)
  assert saved.class_names == ("a", "b")
  with pytest.raises(ValueError, match=r"must be \(N, K\) with K = 3 classes"):
    score_files.save_scores(tmp_path, labels, scores, ["a", "b", "c"])


@pytest.mark.parametrize("name,arg,mode,dataset", [
    ("pretrain_nih", None, "pretrain", "nih_chest_xray14"),
    ("linear_probe", "dataset=nih", "linear_probe", "nih_chest_xray14"),
    ("linear_probe", "dataset=vinbig", "linear_probe", "vinbig_cxr"),
    ("linear_probe", "dataset=rsna", "linear_probe", "rsna_pneumonia"),
    ("localize", "dataset=nih", "localize", "nih_chest_xray14"),
    ("finetune", "dataset=nih,fraction=1pct", "finetune", "nih_chest_xray14"),
    ("segment", "dataset=siim", "segment", "siim_acr_pneumothorax"),
])
def test_paper_configs_validate_and_read_the_nih_pretraining(name, arg, mode, dataset, tmp_path,
                                                             monkeypatch):
  import importlib
  from configs import pretrain_nih
  module = importlib.import_module(f"configs.{name}")
  c = module.get_config(arg) if arg else module.get_config()
  assert (c.mode, c.data.name, c.data.config, c.data.image_size) == (mode, dataset, "224", 224)
  if mode == "pretrain":
    modes.validate(c)
    return
  # The evaluations read the NIH pretraining run; its config.json gives them the network.
  section = {"linear_probe": "probe", "segment": "probe"}.get(mode, mode)
  assert c[section].checkpoint_dir == "workdirs/pretrain_nih"
  monkeypatch.chdir(tmp_path)
  (tmp_path / "workdirs" / "pretrain_nih").mkdir(parents=True)
  pretraining = pretrain_nih.get_config()
  (tmp_path / "workdirs/pretrain_nih/config.json").write_text(pretraining.to_json_best_effort())
  resolved = modes.resolve(c, tmp_path / "eval")
  modes.validate(resolved)
  for field in ("model", "objective"):
    assert resolved[field].to_dict() == pretraining[field].to_dict(), field
  assert (resolved.model.encoder, resolved.model.stem) == ("resnet50", "imagenet")


def test_report_config_lists_the_paper_workdirs():
  from configs import report_paper
  c = report_paper.get_config()
  modes.validate(c)
  assert c.mode == "report"
  # each the default workdir of a paper config (workdirs/<config name>_<argument values>)
  from otcxr_jax import main
  commands = ["linear_probe.py:dataset=nih", "linear_probe.py:dataset=vinbig",
              "linear_probe.py:dataset=rsna", "finetune.py:dataset=nih,fraction=1pct",
              "finetune.py:dataset=nih,fraction=10pct", "finetune.py:dataset=vinbig,fraction=10pct",
              "finetune.py:dataset=rsna,fraction=10pct", "segment.py:dataset=siim",
              "localize.py:dataset=nih"]
  assert sorted(c.report.workdirs) == sorted(main.default_workdir(f"configs/{command}")
                                             for command in commands)
