"""The evaluation report: tables equal to the runs' metrics.json, valid PNG figures, the mode and
the command line, and refused inputs.

End to end: the runs (the unit tests are in tests/modes/test_report_mode.py)."""

from otcxr_jax import config_lib, modes
from otcxr_jax.reporting import runs as report
from otcxr_jax.modes import report as report_mode
from tests.modes.test_report_mode import runs  # noqa: F401 fixture
from tests.tensorboard_events import read_events


def test_mode_and_command_line_write_the_same_report(runs, tmp_path, capsys):
  workdirs = [str(w) for w, _ in runs.values()]
  c = config_lib.base_config()
  c.mode = "report"
  c.report.workdirs = tuple(workdirs)
  modes.validate(c)
  report_mode.run(c, str(tmp_path / "by_mode"))
  _, images, _ = read_events(tmp_path / "by_mode" / "tensorboard" / "report")  # the figures
  assert set(images) == {f"figures/{p.stem}" for p in (tmp_path / "by_mode" / "figures").iterdir()}
  assert images
  assert report.main([*workdirs, "--out", str(tmp_path / "by_cli")]) == 0
  assert f"report: {tmp_path / 'by_cli' / 'report.md'}" in capsys.readouterr().out
  by_mode = (tmp_path / "by_mode" / "report.md").read_text()
  assert by_mode == (tmp_path / "by_cli" / "report.md").read_text()
