"""After a failed read of a checkpoint step, the reads still in flight end in asyncio's "Task
exception was never retrieved" reports whenever their tasks are collected: those naming a step
folder that was read are dropped, every other report is kept."""

import asyncio
import gc
import logging

from etils import epath

from otcxr_jax.training import checkpoint as ckpt_lib


def _abandon_failed_task(message: str) -> None:
  """Runs a task that fails and is never awaited, then lets it be collected."""
  loop = asyncio.new_event_loop()

  async def read():
    raise ValueError(message)

  task = loop.create_task(read())
  loop.run_until_complete(asyncio.sleep(0))
  loop.close()
  del task
  gc.collect()


def _reports(caplog) -> list[str]:
  return [r.getMessage() + str(r.exc_info[1]) for r in caplog.records
          if r.name == "asyncio" and r.exc_info]


def test_abandoned_reads_of_a_read_step_are_dropped_others_kept(tmp_path, caplog):
  step_dir = epath.Path(tmp_path) / "checkpoints" / "pretrain" / "2"
  damaged = f'Error reading local file "{step_dir}/state/d/abc": byte range not valid'
  caplog.set_level(logging.ERROR, logger="asyncio")

  _abandon_failed_task(damaged)  # before the step is read: reported as asyncio always does
  assert len(_reports(caplog)) == 1 and "never retrieved" in _reports(caplog)[0]
  caplog.clear()

  ckpt_lib._quiet_abandoned_reads(step_dir)  # pylint: disable=protected-access
  ckpt_lib._quiet_abandoned_reads(step_dir)  # pylint: disable=protected-access
  assert sum(isinstance(f, ckpt_lib._AbandonedReadFilter)  # pylint: disable=protected-access
             for f in logging.getLogger("asyncio").filters) == 1
  _abandon_failed_task(damaged)
  assert _reports(caplog) == []

  _abandon_failed_task(f"Error reading {tmp_path}/elsewhere/file")
  assert len(_reports(caplog)) == 1 and "elsewhere" in _reports(caplog)[0]
