"""benchmarks/method_runtime.py: run configs on another base config, resumption, the report.

Timing itself (``step_timing.time_in_fresh_process``) runs end to end in
test_benchmark_synthetic.py; here the timing files are written by hand so the report can be
checked against known numbers.
"""

import json

import pytest

from benchmarks import method_runtime, step_timing
from configs import benchmark_synthetic as benchmark_config
from configs import pretrain_nih


def _timing(method: str, seconds: float, peak_mib: float) -> dict:
  return {"method": method, "batch_size": 256, "image_size": 224,
          "devices": "1 x NVIDIA H200 (gpu)", "compile_s": 30.0, "seconds_per_step": seconds,
          "images_per_s": 256 / seconds, "steps": 10, "warmup": 3, "memory_source": "device",
          "peak_memory_bytes": int(peak_mib * 2**20), "memory_before_bytes": 0,
          "date": "2026-11-26T00:00:00", "load_average": [0.0, 0.0, 0.0]}


def test_run_fields_apply_to_any_base_config():
  base = pretrain_nih.get_config()
  vicreg = method_runtime.run_config(base, "vicreg")
  assert vicreg.method == "vicreg" and vicreg.model.encoder == "resnet50"
  assert vicreg.data.image_size == 224 and vicreg.train.batch_size == 256
  no_cvsim = method_runtime.run_config(base, "otcxr_no_cvsim")
  assert no_cvsim.model.cvsim is False and no_cvsim.method == "otcxr"
  assert base.model.cvsim is True  # the base config is left alone
  assert set(method_runtime.DEFAULT_RUNS) == set(benchmark_config.METHOD_RUNS)
  with pytest.raises(ValueError, match=r"run 'mocov3': expected one of"):
    method_runtime.run_config(base, "mocov3")


def test_report_from_timing_files_and_nothing_retimed(tmp_path, monkeypatch):
  timings = {"otcxr": _timing("otcxr", 0.140, 43040.0), "vicreg": _timing("vicreg", 0.125, 40000.0)}
  for run, t in timings.items():
    path = tmp_path / "timing" / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(t))

  def refuse(*args, **kwargs):
    raise AssertionError("a run with a timing file was timed again")

  monkeypatch.setattr(step_timing, "time_in_fresh_process", refuse)
  report = method_runtime.measure(pretrain_nih.get_config(), tmp_path, ["otcxr", "vicreg"],
                                  steps=10, warmup=3, config_name="configs/pretrain_nih.py")
  text = report.read_text()
  assert "Config `configs/pretrain_nih.py`: encoder `resnet50`" in text
  assert "| otcxr | 0.1400 | 1828.6 | 43040.0 |" in text
  assert "| vicreg | 0.1250 | 2048.0 | 40000.0 |" in text
  assert "OTCXR over VICReg: 1.12x the time per step, 1.08x the peak memory." in text
  for name in ("runtime_seconds_per_step.png", "runtime_peak_memory_mib.png"):
    assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert f"(plots/{name})" in text


def test_missing_run_is_timed_and_a_bad_run_is_refused_before_any(tmp_path, monkeypatch):
  timed = []

  def fake(config, path, *, steps, warmup, cache_dir):
    timed.append((config.method, config.model.cvsim, steps, warmup))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_timing(config.method, 0.1, 100.0)))

  monkeypatch.setattr(step_timing, "time_in_fresh_process", fake)
  with pytest.raises(ValueError, match="run 'vicregg'"):
    method_runtime.measure(pretrain_nih.get_config(), tmp_path, ["otcxr", "vicregg"],
                           steps=2, warmup=1)
  assert timed == []  # refused before anything ran
  method_runtime.measure(pretrain_nih.get_config(), tmp_path, ["otcxr_no_cvsim"], steps=2,
                         warmup=1)
  assert timed == [("otcxr", False, 2, 1)]
  assert "OTCXR's overhead over VICReg needs both runs" in (tmp_path / "runtime.md").read_text()
