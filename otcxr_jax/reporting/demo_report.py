"""The demo's report (``modes/demo.py``): ``report.md`` with its PNG plots, next to its metrics."""

from __future__ import annotations

from typing import Mapping, Sequence

import ml_collections
import numpy as np
from etils import epath

from otcxr_jax.data import datasets
from otcxr_jax.reporting import plots
from otcxr_jax.reporting.summary import markdown_table
from otcxr_jax.training.progress import format_duration

PRETRAIN_CURVES = ("loss", "ot", "var", "cov", "global", "marginal_error", "plan_entropy")


def _fmt(x) -> str:
  return "undefined" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def _listed(names: Sequence[str], summary: Mapping, conjunction: str) -> str:
  """Names with their test mean AUC: 'a (0.700)', 'a (0.700) and b (0.650)', 'a (…), b (…) and
  c (…)', with ``conjunction`` in place of 'and'."""
  items = [f"{k} ({summary[k]['test_mean_auc']:.3f})" for k in names]
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


def _beats(summary: Mapping, beaten: Sequence[str], floors: Sequence[str]) -> str:
  """The verdict's predicate: which floors OTCXR beats and which it does not."""
  others = [k for k in floors if k not in beaten]
  if not others:
    return "beats " + _listed(beaten, summary, "and")
  if not beaten:
    if len(others) == 1:
      return "does not beat " + _listed(others, summary, "or")
    return ("beats neither " + _listed(others, summary, "nor") if len(others) == 2 else
            "beats none of " + _listed(others, summary, "and"))
  return f"beats {_listed(beaten, summary, 'and')}, but not {_listed(others, summary, 'or')}"


def _beyond_the_paper(objective) -> str:
  """The objective line's note of what the objective adds to the paper's, with the commands that
  take each addition away."""
  added, paper = [], []
  if objective.get("varcov_per_position"):
    added.append("the variance and covariance over the batch at each cell (the paper pools the "
                 "batch and the cells)")
    paper.append("--config.objective.varcov_per_position=False")
  if objective.get("global_weight"):
    if objective.get("teacher_tau"):
      kind = f"BYOL's (predictor, EMA teacher with decay from {objective.teacher_tau:g} to 1)"
    else:
      kind = "VICReg's on the mean tokens"
    added.append(f"an image-level term of weight {objective.global_weight:g}, {kind}")
    paper[:0] = ["--config.objective.global_weight=0", "--config.objective.teacher_tau=0"]
  if not added:
    return ""
  text = (f"; not in the paper: {'; and '.join(added)}. What each adds is measured in "
          "docs/results.md (the sections on the demo's objective); ")
  if objective.get("global_weight"):
    text += ("`--config.objective.alpha=0 --config.objective.beta=0 --config.objective.eta=0` "
             "trains the image-level term alone, ")
  return text + f"`{' '.join(paper)}` the paper's objective (each in a new workdir)"


def _demo_comparisons(result: Mapping) -> tuple[str, list, list]:
  """The demo's verdict (separated 95% intervals), its paired-difference rows and its
  feature-spread rows."""
  summary = result["probes"]
  ours = summary["OTCXR"]["test_mean_auc"]
  ours_ci = summary["OTCXR"]["test_mean_auc_ci95"]
  floors = [k for k in summary if k != "OTCXR"]

  def separated(k) -> bool:  # OTCXR's whole interval above the floor's
    return ours_ci[0] > summary[k]["test_mean_auc_ci95"][1]

  beaten = [k for k in floors if separated(k)]
  verdict = (f"OTCXR's test mean AUC is {ours:.3f} [{ours_ci[0]:.3f}, {ours_ci[1]:.3f}]. "
             f"With non-overlapping 95% intervals it {_beats(summary, beaten, floors)}.")
  comparison_rows = []
  for k in floors:
    delta = summary[k].get("otcxr_minus_this")
    if delta:
      comparison_rows.append([k, f"{delta['difference']:+.3f}",
                              f"[{delta['ci95'][0]:+.3f}, {delta['ci95'][1]:+.3f}]",
                              "yes" if separated(k) else "no"])
  spread = result.get("feature_spread", {})
  spread_rows = [[k, f"{v['position_share']:.4f}", f"{v['image_share']:.4f}",
                  f"{v['interaction_share']:.4f}", f"{v['pooled_std_over_mean']:.4f}"]
                 for k, v in spread.items()]
  return verdict, comparison_rows, spread_rows


def _labelled(config, result: Mapping) -> str:
  """What the probes were trained on: every training image's labels, or a subset's."""
  n = result["num_images"]
  pretrained_on = result.get("pretrain_images", n["train"])
  if config.probe.train_examples:
    return (f"trained on the labels of {n['train']:,} of the {pretrained_on:,} training images "
            f"(a fixed random subset, `probe.train_examples`; pretraining read all "
            f"{pretrained_on:,} without labels)")
  return f"trained on the labels of all {n['train']:,} training images"


def _images(result: Mapping) -> str:
  n = result["num_images"]
  pretrained_on = result.get("pretrain_images", n["train"])
  return (f"{pretrained_on:,} training images; probes: {n['train']:,} training, "
          f"{n['validation']:,} validation, {n['test']:,} test images")


def write_demo_report(workdir, *, config: ml_collections.ConfigDict, result: Mapping,
                      history, probes: Mapping, class_names: Sequence[str], pairs) -> epath.Path:
  workdir = epath.Path(workdir)
  fig_dir = workdir / "figures"
  curves = plots.training_curves(history, PRETRAIN_CURVES, fig_dir / "pretrain_curves.png",
                                 title="OTCXR pretraining")
  curves_md = (f"![pretraining curves]({fig_dir.name}/{curves})" if curves else
               "No pretraining curves: the run's metric log (`metrics/pretrain.jsonl`) holds no "
               "steps.")
  bars = plots.auc_bars(class_names, {k: p.test_per_class for k, p in probes.items()},
                        fig_dir / "auc_per_class.png")
  corr = plots.correspondences(pairs.views_s, pairs.views_t, pairs.plans, pairs.grid,
                               fig_dir / "transport_plan.png",
                               top_k=config.report.num_correspondences)
  attention_md = "CV-SIM is off in this run (`model.cvsim=False`): no attention maps."
  if pairs.attention_s is not None:
    att = plots.attention_maps(pairs.views_s, pairs.views_t, pairs.attention_s, pairs.grid,
                               fig_dir / "cvsim_attention.png")
    attention_md = ("CV-SIM cross-attention of one query cell of view s over view t (mean over "
                    f"heads):\n\n![CV-SIM attention]({fig_dir.name}/{att})")

  summary = result["probes"]
  best = max(s["test_mean_auc"] for s in summary.values())
  rows = []
  for name, s in summary.items():
    lo, hi = s["test_mean_auc_ci95"]
    auc = f"{s['test_mean_auc']:.3f}"
    rows.append([name, f"**{auc}**" if s["test_mean_auc"] == best else auc, f"[{lo:.3f}, {hi:.3f}]",
                 f"{s['val_mean_auc']:.3f}", f"{s['weight_decay']:g}"])
  per_class_rows = [[c] + [_fmt(summary[n]["test_per_class"][c]) for n in summary]
                    for c in class_names]
  m, d, t = config.model, config.data, config.train
  last = history[-1] if history else {}
  verdict, comparison_rows, spread_rows = _demo_comparisons(result)
  global_md = f", image-level term {_fmt(last['global'])}" if "global" in last else ""
  floors_md = ("the same encoder at its random initialisation, evaluated with the BatchNorm "
               "statistics it was initialised with (mean 0, variance 1) and with statistics "
               "re-estimated on the training images (as a pretrained encoder's are)"
               if "random init, data BN stats" in summary else
               f"the same encoder at its random initialisation ({m.norm} normalisation: the "
               "same function in training and evaluation)")
  builder = datasets.builder_config(config)
  dataset_config = getattr(builder, "name", builder)
  readout = ("the frozen encoder's dense map, flattened (a linear readout that keeps where things "
             "are)" if config.probe.readout == "map" else "frozen pooled features")
  text = f"""# OTCXR demo report

OTCXR pretraining{" with an image-level term (below)" if config.objective.global_weight else ""} on the synthetic chest X-ray dataset (`{d.name}/{dataset_config}`), then linear
probes on {readout}, {_labelled(config, result)}. **{verdict}**

The floors: {floors_md}, and raw pixels downsampled to
{config.probe.pixel_floor_size}x{config.probe.pixel_floor_size}.

## Linear probe, test split (evaluated once; weight decay chosen on validation; the highest in bold)

{markdown_table(["features", "test mean AUC", "95% CI (bootstrap)", "validation mean AUC",
                 "weight decay"], rows)}

OTCXR minus each floor, paired bootstrap over the same test images (500 resamples):

{markdown_table(["floor", "OTCXR minus floor", "95% CI (paired)", "separate 95% intervals"],
                comparison_rows)}

![per-class AUC]({fig_dir.name}/{bars})

### Per-class test AUC

{markdown_table(["class"] + list(summary), per_class_rows)}

## Pretraining

- encoder `{m.encoder}` (width {m.width}, stem `{m.stem}`, {m.norm} normalisation), dense map `{m.dense_stage}`,
  projector {m.projector_layers} layers to {m.projector_dim}, CV-SIM {'on' if m.cvsim else 'off'}
- objective: α={config.objective.alpha}, β={config.objective.beta}, η={config.objective.eta},
  ε={config.objective.epsilon}, {config.objective.num_iters} Sinkhorn iterations,
  gradient `{config.objective.grad_mode}`{_beyond_the_paper(config.objective)}
- {t.num_steps} steps of batch {t.batch_size} at {d.image_size}x{d.image_size},
  optimiser `{config.optim.name}`; {format_duration(result['pretrain_seconds'])} on
  {result['devices']}; {_images(result)}
- final: loss {_fmt(last.get('loss'))}, L_OT {_fmt(last.get('ot'))}, variance
  {_fmt(last.get('var'))}, covariance {_fmt(last.get('cov'))}, Sinkhorn marginal error
  {_fmt(last.get('marginal_error'))}, plan entropy {_fmt(last.get('plan_entropy'))}{global_md}

{curves_md}

### What the features carry (`evaluation/diagnostics.py`, 512 training images)

Shares of the dense feature map's variance between positions (the same in every image), between
images (what moves the pooled feature) and their interaction (local differences); and the median
over pooled-feature dimensions of std/|mean| (near 0: every image gets nearly the same pooled
feature).

{markdown_table(["encoder", "position share", "image share", "interaction share",
                 "pooled std/|mean|"], spread_rows)}

## What the pretraining head sees

Two augmented views of test images and the {config.report.num_correspondences} heaviest entries
of the entropic transport plan between their dense features:

![transport plan]({fig_dir.name}/{corr})

{attention_md}

Total demo time: {format_duration(result['total_seconds'])}.
"""
  path = workdir / "report.md"
  path.write_text(text)
  return path
