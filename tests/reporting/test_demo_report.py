"""The demo report's verdict and probe table, from hand-made probe summaries."""

import pytest

from otcxr_jax.reporting import demo_report


def _summary(ours, **floors):
  """{name: (test mean AUC, 95% interval)} as the demo's ``result['probes']``."""
  probes = {"OTCXR": ours, **{k.replace("_", " "): v for k, v in floors.items()}}
  return {"probes": {k: {"test_mean_auc": auc, "test_mean_auc_ci95": ci}
                     for k, (auc, ci) in probes.items()}}


@pytest.mark.parametrize("ours, expected", [
    ((0.80, (0.79, 0.81)), "it beats random init (0.700) and raw pixels (0.750)."),
    ((0.76, (0.745, 0.775)), "it beats random init (0.700), but not raw pixels (0.750)."),
    ((0.70, (0.68, 0.72)), "it beats neither random init (0.700) nor raw pixels (0.750)."),
])
def test_verdict_names_each_floor_once_as_beaten_or_not(ours, expected):
  result = _summary(ours, random_init=(0.70, (0.69, 0.71)), raw_pixels=(0.75, (0.74, 0.76)))
  verdict, _, _ = demo_report._demo_comparisons(result)
  assert verdict == (f"OTCXR's test mean AUC is {ours[0]:.3f} [{ours[1][0]:.3f}, "
                     f"{ours[1][1]:.3f}]. With non-overlapping 95% intervals {expected}")


def test_verdict_with_one_or_three_floors():
  one = _summary((0.70, (0.68, 0.72)), raw_pixels=(0.75, (0.74, 0.76)))
  assert demo_report._demo_comparisons(one)[0].endswith(
      "it does not beat raw pixels (0.750).")
  three = _summary((0.60, (0.58, 0.62)), a=(0.7, (0.69, 0.71)), b=(0.65, (0.64, 0.66)),
                   c=(0.61, (0.60, 0.62)))
  assert demo_report._demo_comparisons(three)[0].endswith(
      "it beats none of a (0.700), b (0.650) and c (0.610).")
  # touching intervals are not separated
  touching = _summary((0.70, (0.66, 0.72)), c=(0.61, (0.60, 0.66)))
  assert demo_report._demo_comparisons(touching)[0].endswith("it does not beat c (0.610).")


def test_objective_line_names_what_is_beyond_the_paper_only_when_it_is_on():
  import ml_collections  # noqa: PLC0415
  objective = ml_collections.ConfigDict(
      dict(global_weight=0.0, teacher_tau=0.0, varcov_per_position=False))
  assert demo_report._beyond_the_paper(objective) == ""
  objective.global_weight = 50.0
  vicreg = demo_report._beyond_the_paper(objective)
  assert "not in the paper: an image-level term of weight 50, VICReg's on the mean tokens." in vicreg
  assert "at each cell" not in vicreg
  objective.teacher_tau = 0.996
  byol = demo_report._beyond_the_paper(objective)
  assert "weight 50, BYOL's (predictor, EMA teacher with decay from 0.996 to 1)." in byol
  # the commands of the two ablations, the second one accepted by the config's validation
  assert ("`--config.objective.alpha=0 --config.objective.beta=0 --config.objective.eta=0`"
          in byol)
  assert "`--config.objective.global_weight=0 --config.objective.teacher_tau=0` the paper's" in byol
  objective.varcov_per_position = True
  both = demo_report._beyond_the_paper(objective)
  assert "the variance and covariance over the batch at each cell" in both
  assert ("`--config.objective.global_weight=0 --config.objective.teacher_tau=0 "
          "--config.objective.varcov_per_position=False` the paper's objective") in both
  objective.global_weight, objective.teacher_tau = 0.0, 0.0
  alone = demo_report._beyond_the_paper(objective)
  assert "image-level" not in alone and "alpha=0" not in alone
  assert "`--config.objective.varcov_per_position=False` the paper's objective" in alone
