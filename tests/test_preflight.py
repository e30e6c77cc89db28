"""The TPU workers' preflight: one line per worker, checked together by the launching machine."""

from pathlib import Path

import pytest

from otcxr_jax import preflight

RECORDED = (Path(__file__).parent / "fixtures" / "preflight_v4-32.txt").read_text()


def test_recorded_output_of_four_workers_is_summarised():
  records = preflight.parse(RECORDED)
  assert [r["process"] for r in records] == [0, 1, 2, 3]  # gcloud's own lines are skipped
  assert records[0]["host"] == "t1v-n-5a7d-w-0" and records[0]["local_devices"] == 4
  assert preflight.check(RECORDED) == (
      "preflight: 4 worker(s), Python 3.11.13, jax 0.10.2 (jaxlib 0.10.2), 16 x TPU v4 "
      "(tpu, 4 per worker)")


def _drop_worker(text, n):
  return "\n".join(line for line in text.splitlines() if f"process={n} " not in line)


@pytest.mark.parametrize("edit, message", [
    (lambda t: "Using ssh batch size of 1.\n", "no worker printed a 'otcxr-preflight' line"),
    (lambda t: t.replace("python=3.11.13", "python=3.10.12"), "runs Python 3.10.12"),
    (lambda t: t.replace("jax=0.10.2 jaxlib", "jax=0.9.0 jaxlib", 1),
     "the workers differ in jax: 0.10.2, 0.9.0"),
    (lambda t: t.replace("backend=tpu kind=TPU_v4", "backend=cpu kind=cpu", 1),
     "sees backend 'cpu' (cpu), not 'tpu'"),
    (lambda t: _drop_worker(t, 2), "the reports are of processes [0, 1, 3]"),
    (lambda t: t.replace("local_devices=4", "local_devices=3", 1),
     "local devices add up to 15, but jax sees 16"),
    (lambda t: t.replace(" devices=16", "", 1), "a preflight line lacks devices"),
])
def test_a_worker_not_ready_is_named(edit, message):
  with pytest.raises(preflight.PreflightError) as e:
    preflight.check(edit(RECORDED))
  assert message in str(e.value)


def test_this_machines_report_passes_its_own_check(capsys):
  import jax
  line = preflight.report()
  assert line.startswith("otcxr-preflight process=0 processes=1 ")
  summary = preflight.check(f"noise\n{line}\n", backend=jax.default_backend())
  assert f"{jax.device_count()} x " in summary and f"jax {jax.__version__}" in summary
  with pytest.raises(preflight.PreflightError):
    preflight.check(line, backend="tpu")


def test_check_command_reads_stdin_and_exits_nonzero_on_failure(monkeypatch, capsys):
  import io
  monkeypatch.setattr("sys.stdin", io.StringIO(RECORDED))
  assert preflight.main(["--check"]) == 0
  assert capsys.readouterr().out.startswith("preflight: 4 worker(s)")
  monkeypatch.setattr("sys.stdin", io.StringIO(_drop_worker(RECORDED, 0)))
  assert preflight.main(["--check"]) == 1
  assert "preflight failed: jax counts 4 processes" in capsys.readouterr().err
