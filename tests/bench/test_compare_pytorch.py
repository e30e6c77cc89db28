"""benchmarks/compare_pytorch.py: the JAX half always; the PyTorch half where a Python with torch
is found (``OTCXR_TORCH_PYTHON``, default this interpreter), checked against JAX's loss.

The benchmark's runs (the timed rounds) are in tests/e2e/test_compare_pytorch_runs.py."""

import os
import sys

import jax
import numpy as np
import pytest

from benchmarks import compare_pytorch as cp

TORCH_PYTHON = os.environ.get("OTCXR_TORCH_PYTHON", sys.executable)
HAS_TORCH = cp.torch_importable(TORCH_PYTHON)
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason=f"{TORCH_PYTHON} cannot import torch (set OTCXR_TORCH_PYTHON to a "
    "Python with requirements-bench.txt installed)")

TINY = {"model.width": 0.125, "model.projector_hidden": 32, "model.projector_dim": 16,
        "model.cvsim_heads": 2, "objective.num_iters": 5}


def _tiny(setting="demo", precision="float32", batch=4, size=32, **extra):
  return cp.make_config(setting, precision, batch=batch, image_size=size,
                        overrides={**TINY, **extra})


def test_settings_are_the_named_configs():
  demo = cp.make_config("demo")
  assert (demo.model.encoder, demo.model.width, demo.model.stem, demo.model.num_stages,
          demo.model.norm, demo.data.image_size, demo.train.batch_size) == (
              "resnet18", 0.5, "imagenet", 3, "group", 64, 128)
  r18 = cp.make_config("resnet18_224", "bfloat16")
  assert (r18.model.encoder, r18.model.stem, r18.data.image_size, r18.train.batch_size,
          r18.train.compute_dtype) == ("resnet18", "imagenet", 224, 32, "bfloat16")
  assert cp.make_config("resnet50_224", batch=256).train.batch_size == 256
  with pytest.raises(ValueError, match="setting"):
    cp.make_config("resnet34_224")


@pytest.mark.parametrize("setting,size", [("demo", 64), ("demo", 36), ("resnet18_224", 224),
                                          ("resnet18_224", 100)])
def test_dense_grid_matches_the_model(setting, size):
  config = cp.make_config(setting, batch=2, image_size=size, overrides=TINY)
  model, loss_fn, inputs = cp.build_jax(config, "otcxr")
  model.eval()  # no batch statistics to update while tracing shapes
  out = jax.eval_shape(model, inputs["view_s"], inputs["view_t"])
  spec = cp.torch_spec(config, "otcxr", "float32")
  assert out.grid == (cp.dense_grid(spec["model"], size),) * 2
  if config.objective.location_weight:
    n = out.grid[0] * out.grid[1]
    assert inputs["location"].shape == (2, n, n)


def test_weights_are_named_and_laid_out_for_pytorch():
  model, _, _ = cp.build_jax(_tiny(), "otcxr")
  weights = cp.jax_weights(model)
  conv = weights["encoder.stem.conv.weight"]
  assert conv.shape == (8, 1, 7, 7)  # (out, in, kh, kw): the ImageNet stem
  assert weights["projector.hidden.0.weight"].shape == (32, 32)  # (out, in): stage 3, 32 channels
  assert "projector.norms.0.running_var" in weights
  assert "cvsim.norm_q.weight" in weights and "cvsim.mlp.fc2.bias" in weights
  np.testing.assert_array_equal(
      conv, np.transpose(np.asarray(model.encoder.stem.conv.kernel[...]), (3, 2, 0, 1)))


def test_cli_refuses_a_python_without_torch(tmp_path):
  fake = tmp_path / "python"
  fake.write_text("#!/bin/sh\nexit 1\n")
  fake.chmod(0o755)
  with pytest.raises(SystemExit, match="cannot import torch"):
    cp.main(["--setting", "demo", "--torch-python", str(fake)])


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("setting,step,size", [("demo", "otcxr", 32), ("demo", "encoder", 32),
                                               ("resnet18_224", "otcxr", 64)])
def test_pytorch_port_computes_the_jax_loss(setting, step, size):
  worker = cp.TorchWorker(TORCH_PYTHON)
  try:
    values = cp.check_against_torch(worker, _tiny(setting, size=size), step, "float32")
  finally:
    worker.close()
  assert set(values["torch"]) == set(values["jax"])
  for key, value in values["jax"].items():
    assert values["torch"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_step_flops_counts_a_matrix_product_by_hand():
  m, k, n = 8, 16, 4
  compiled = jax.jit(lambda a, b: a @ b).lower(
      jax.ShapeDtypeStruct((m, k), np.float32), jax.ShapeDtypeStruct((k, n), np.float32)).compile()
  assert cp.step_flops(compiled) == pytest.approx(2 * m * k * n, rel=0.05)


def test_step_flops_is_none_without_a_cost_analysis():
  class NoAnalysis:
    def cost_analysis(self):
      raise RuntimeError("this backend has no cost analysis")

  class Empty:
    def cost_analysis(self):
      return [{}]

  assert cp.step_flops(NoAnalysis()) is None and cp.step_flops(Empty()) is None


def test_utilisation_is_the_step_flops_over_time_and_peak():
  case = {"setting": "resnet50_224", "step": "otcxr", "precision": "bfloat16", "batch_size": 256,
          "flops_per_step": 2.0e13, "jax_images_per_s": 2560.0, "torch_images_per_s": 1280.0}
  cp.add_utilisation(case, cp.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16"))
  # 10 steps/s x 20 TFLOP = 200 TFLOP/s; PyTorch 5 steps/s: 100 TFLOP/s; peak 989.4
  assert case["jax_tflops"] == pytest.approx(200.0) and case["torch_tflops"] == pytest.approx(100.0)
  assert case["jax_mfu"] == pytest.approx(200.0 / 989.4)
  assert cp.peak_tflops("NVIDIA H200", "float32") == 494.7
  assert cp.peak_tflops("cpu", "float32") is None
  cpu = {**case, "jax_mfu": None}
  cpu.pop("jax_mfu")
  cp.add_utilisation(cpu, None)
  assert "jax_mfu" not in cpu and cpu["jax_tflops"] == pytest.approx(200.0)
  assert "20000.0" in cp.format_utilisation(case) and "20.2%" in cp.format_utilisation(case)
