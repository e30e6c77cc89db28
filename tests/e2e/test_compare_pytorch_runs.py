"""benchmarks/compare_pytorch.py end to end: timed rounds of the JAX half alone, and of both halves
alternating where a Python with torch is found (the unit tests are in
tests/bench/test_compare_pytorch.py)."""

import json

import pytest

from benchmarks import compare_pytorch as cp
from tests.bench.test_compare_pytorch import TINY, TORCH_PYTHON, needs_torch


def test_jax_half_times_the_train_step_and_reports(tmp_path):
  result = cp.compare(["demo"], ["otcxr"], ["bfloat16"], torch_python=None, rounds=2,
                      steps_per_round=1, warmup=1, batch=4, image_size=32, overrides=TINY,
                      log=lambda s: None)
  (case,) = result["cases"]
  assert case["precision"] == "bfloat16" and len(case["jax_step_s"]) == 2
  assert case["jax_images_per_s"] > 0 and "ratio" not in case
  report = cp.format_report(result)
  assert "demo" in report and "jax" in report and "pytorch   -" in report
  json.dumps(result)


@needs_torch
def test_both_halves_alternate_and_give_a_ratio():
  result = cp.compare(["demo"], ["encoder"], ["float32", "bfloat16"], torch_python=TORCH_PYTHON,
                      rounds=2, steps_per_round=1, warmup=0, batch=4, image_size=32,
                      overrides=TINY, log=lambda s: None)
  assert result["torch"]["torch"]
  for case in result["cases"]:
    assert len(case["torch_step_s"]) == len(case["jax_step_s"]) == 2
    assert case["ratio"] == pytest.approx(case["jax_images_per_s"] / case["torch_images_per_s"])
