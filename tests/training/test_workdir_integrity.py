"""Run integrity of a workdir, as a user sees it: a rerun with another config is refused before
anything is written (exit 2, the fields with old and new values), more steps continue, the
override records the change; one run at a time (a lock naming its holder, stale locks taken
over); a damaged latest checkpoint falls back to the newest intact step in one line; the metric
log holds each step once after resumptions; a finished evaluation is not scored again with
another config."""

import json
import os

import pytest

from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import workdir as workdir_lib
from tests.tiny import tiny_config

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def _files(workdir) -> dict[str, bytes]:
  """Every file under ``workdir`` with its contents."""
  out = {}
  for dirpath, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


# --- config changes -----------------------------------------------------------------------------


def test_fields_the_mode_does_not_read_are_not_compared(tmp_path):
  config = tiny_config(tmp_path / "tfds")
  workdir_lib.save_config(config, tmp_path)
  before = _files(tmp_path)
  other = tiny_config(tmp_path / "tfds")
  other.finetune.num_steps = 7       # another mode's section
  other.vicreg.sim_coeff = 1.0       # another method's hyperparameters
  with other.unlocked():
    other.benchmark = {"seeds": 5}   # a section outside the schema (a script's own)
  assert workdir_lib.check_config(other, tmp_path).changes == ()
  workdir_lib.save_config(other, tmp_path)
  assert _files(tmp_path) == before

  # A field the stored config lacks (added to the schema later) is unchanged at its default.
  stored = json.loads((tmp_path / "config.json").read_text())
  del stored["objective"]["center_tokens"]
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert workdir_lib.check_config(config, tmp_path).changes == ()
  config.objective.center_tokens = not config.objective.center_tokens
  with pytest.raises(workdir_lib.ConfigChangeError, match=r"objective.center_tokens True -> False"):
    workdir_lib.check_config(config, tmp_path)


def test_an_evaluation_compares_only_what_it_reads(tmp_path):
  """An evaluation reads no pretraining schedule or augmentation, and only localize (its transport
  maps) the pretraining objective: a rerun with other values of those is the same run."""
  for mode, objective_compared in (("linear_probe", False), ("finetune", False),
                                   ("localize", True)):
    workdir = tmp_path / mode
    config = tiny_config(tmp_path / "tfds", mode=mode)
    workdir_lib.save_config(config, workdir)
    other = tiny_config(tmp_path / "tfds", mode=mode)
    other.train.batch_size, other.train.num_steps = 64, 5000
    other.optim.base_learning_rate = 0.5
    other.augment.rotation_deg = 3.0
    assert workdir_lib.check_config(other, workdir).changes == (), mode
    other.objective.epsilon = 0.5
    if objective_compared:
      with pytest.raises(workdir_lib.ConfigChangeError, match=r"objective.epsilon 0.05 -> 0.5"):
        workdir_lib.check_config(other, workdir)
    else:
      assert workdir_lib.check_config(other, workdir).changes == (), mode
  pretraining = tiny_config(tmp_path / "tfds")
  workdir_lib.save_config(pretraining, tmp_path / "pretrain")
  pretraining.optim.base_learning_rate = 0.5
  with pytest.raises(workdir_lib.ConfigChangeError, match=r"optim.base_learning_rate"):
    workdir_lib.check_config(pretraining, tmp_path / "pretrain")


# --- the lock -----------------------------------------------------------------------------------


def test_lock_without_hard_links(tmp_path, monkeypatch):
  """Filesystems without hard links (some FUSE and network mounts): an exclusive create."""
  def no_link(src, dst):
    raise OSError(1, "Operation not permitted")

  monkeypatch.setattr(os, "link", no_link)
  first = workdir_lib._Lock(tmp_path)  # pylint: disable=protected-access
  first.acquire()
  with pytest.raises(workdir_lib.WorkdirInUseError, match=rf"pid {os.getpid()}"):
    workdir_lib._Lock(tmp_path).acquire()  # pylint: disable=protected-access
  first.release()
  assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_lock_on_an_object_store_path(tmp_path, monkeypatch):
  """``gs://`` workdirs: no atomic create, the lock goes through epath (exists, write, read)."""
  monkeypatch.setattr(ckpt_lib, "is_remote", lambda path: True)
  first = workdir_lib._Lock(tmp_path)  # pylint: disable=protected-access
  first.acquire()
  with pytest.raises(workdir_lib.WorkdirInUseError, match=rf"pid {os.getpid()}"):
    workdir_lib._Lock(tmp_path).acquire()  # pylint: disable=protected-access
  first.release()
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


# --- damaged checkpoints ------------------------------------------------------------------------


# --- the metric log -----------------------------------------------------------------------------
