"""Run integrity of a workdir: the config it was started with, one run at a time, changes recorded.

Every mode that writes into ``--workdir`` (``pretrain``, ``demo``, ``linear_probe``, ``knn``,
``finetune``, ``segment``, ``localize``) runs inside :func:`guarded`, which

1. *locks* the workdir: ``<workdir>/run.lock`` names the holder (host, pid, start time, command).
   A second run on the same workdir stops at once with :class:`WorkdirInUseError`. A lock whose
   holder is gone (no such process on the same host, or no heartbeat for ``STALE_AFTER_S``
   seconds: the holder refreshes it every ``HEARTBEAT_S`` seconds) is taken over with a warning.
   The lock is released when the run ends, by an exception or by SIGTERM too. With several
   processes only process 0 takes it, and every process learns the outcome. On ``gs://`` and
   other object stores the lock is written through ``etils.epath`` without an atomic
   create-if-absent: a best effort that catches runs started seconds apart, not at once.
2. *compares the config* with the one the workdir was started with, before anything is
   written. The first run of a mode writes its config to ``<workdir>/config.json`` (what
   evaluations, export and predict rebuild the model from); a run of another mode in the same
   workdir (a linear probe of the pretraining run beside it, ``probe.checkpoint_dir=''``) keeps its
   own in ``config_<mode>.json``. A rerun may change the fields of :data:`RESUMABLE_FIELDS`
   (more steps, logging, checkpoint and evaluation intervals, data paths, process coordinates);
   a finished evaluation (its ``metrics.json`` written) only those of :data:`NEUTRAL_FIELDS`,
   which leave its results as they are. Any other change is refused with
   :class:`ConfigChangeError` naming each field with its old and new value, and ``config.json``
   is left untouched. ``--config.allow_config_change=True`` accepts the change. Every accepted
   change is printed and appended to ``<workdir>/config_history.jsonl`` (time, host, old and new
   values), and the config file then holds the values in effect.

Fields the run's mode does not read are not compared: the sections of other modes
(:data:`SECTION_MODES`, :data:`FIELD_MODES`: an evaluation reads no pretraining schedule or
augmentation), the hyperparameters of other pretraining methods (:data:`SECTION_METHODS`, read
only where the pretraining objective is: :data:`METHOD_SECTION_MODES`) and fields outside the
schema of ``config_lib.base_config`` (sections a config file adds for its own script, such as the
synthetic benchmark's). A field the stored config lacks (added to the
schema after the run started) counts as unchanged while it holds its default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterator, Mapping

import jax
import ml_collections
import numpy as np
from etils import epath

from otcxr_jax import config_lib, errors
from otcxr_jax.training import checkpoint as ckpt_lib

CONFIG_FILE = ckpt_lib.CONFIG_FILE
HISTORY_FILE = "config_history.jsonl"
LOCK_FILE = "run.lock"
METRICS_FILE = "metrics.json"
OVERRIDE_FIELD = "allow_config_change"

# Fields whose change leaves a run's results as they are: logging, checkpoint retention, where
# the data and the other processes are found. A finished evaluation may be rerun with these.
NEUTRAL_FIELDS = (
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.tensorboard",
    "data.data_dir",
    "data.manual_dir",
    "data.num_threads",
    "data.build_processes",
    "distributed.coordinator_address",
    "distributed.num_processes",
    "distributed.process_id",
)
# Fields that may change when a run is resumed: the neutral ones, the number of steps (more
# steps continue from the checkpoint; the learning-rate schedule then spans the new number),
# the validation interval and what is drawn in figures.
RESUMABLE_FIELDS = NEUTRAL_FIELDS + (
    "train.num_steps",
    "finetune.num_steps",
    "finetune.num_epochs",
    "finetune.eval_every",
    "finetune.eval_every_epochs",
    "segment.num_steps",
    "segment.eval_every",
    "localize.num_examples",
    "report.num_correspondences",
)
# Sections only some modes read: compared for those modes only.
SECTION_MODES = {
    "probe": ("demo", "linear_probe", "knn", "segment", "finetune"),  # finetune: its LP stage
    "knn": ("knn",),
    "finetune": ("finetune",),
    "segment": ("segment",),
    "localize": ("localize",),
    "report": ("demo",),
    "augment": ("pretrain", "demo"),
    "optim": ("pretrain", "demo"),
}
# Fields of shared sections only some modes read: compared for those modes only.
FIELD_MODES = {"train.batch_size": ("pretrain", "demo"), "train.num_steps": ("pretrain", "demo")}
# Sections of one pretraining method's hyperparameters: compared when config.method is it.
SECTION_METHODS = {section: method for method, section in config_lib.METHOD_SECTIONS.items()}
# Modes that compute the pretraining objective (localize: its transport maps).
METHOD_SECTION_MODES = ("pretrain", "demo", "localize")
# Modes whose results are their metrics.json: once it is written, only NEUTRAL_FIELDS may change.
EVALUATION_MODES = ("linear_probe", "knn", "finetune", "segment", "localize")
# Modes whose workdir is read back through config.json (a fine-tuning run is loaded as a
# classifier by export, predict and localize): they refuse a workdir of another mode.
EXCLUSIVE_MODES = ("finetune",)

HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class WorkdirError(errors.UserError, ValueError):
  """The workdir holds something this run cannot continue (another mode's run, a damaged file)."""


class ConfigChangeError(WorkdirError):
  """The run's config differs from the workdir's in fields that may not change."""


class WorkdirInUseError(errors.UserError):
  """Another run holds the workdir's lock."""


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(f"Warning: {message}", file=sys.stderr, flush=True)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- the config record --------------------------------------------------------------------------

def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as it is stored (tuples become lists), so that both sides compare alike."""
  return json.loads(config.to_json_best_effort())


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
  """Every field of ``config_lib.base_config`` with its default, JSON-normalised."""
  return _flatten(_as_json(config_lib.base_config()))


def _compared(field: str, mode: str, method: str) -> bool:
  """Whether a run of ``mode`` (with pretraining method ``method``) reads ``field``."""
  if field not in _schema():
    return False
  section = field.split(".", 1)[0]
  if section in SECTION_MODES and mode not in SECTION_MODES[section]:
    return False
  if field in FIELD_MODES and mode not in FIELD_MODES[field]:
    return False
  if section in SECTION_METHODS:
    return SECTION_METHODS[section] == method and mode in METHOD_SECTION_MODES
  return True


def _read_json(path: epath.Path, what: str) -> dict:
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise WorkdirError(f"{path} ({what}) cannot be read: {type(e).__name__}: {e}. Restore it "
                       f"from a copy, or start the run in a new workdir.") from None


def config_path(workdir: str | epath.PathLike, mode: str) -> epath.Path:
  """Where the workdir keeps the config of its ``mode`` run (see the module docstring).

  Raises:
    WorkdirError: ``mode`` is one of :data:`EXCLUSIVE_MODES` and the workdir's ``config.json``
      is another mode's, or ``config.json`` is not valid JSON.
  """
  workdir = epath.Path(workdir)
  main = workdir / CONFIG_FILE
  if not main.exists():
    return main
  stored = _read_json(main, "the config the workdir was started with").get("mode")
  if stored == mode:
    return main
  if mode in EXCLUSIVE_MODES:
    raise WorkdirError(f"workdir {workdir} holds a {stored!r} run ({main}); run {mode} in another "
                       f"workdir (point config.{mode}.checkpoint_dir at that run's checkpoints).")
  return workdir / f"config_{mode}.json"


@dataclasses.dataclass(frozen=True)
class Change:
  field: str
  old: Any
  new: Any
  allowed_by: str  # 'resumable', 'neutral' or OVERRIDE_FIELD


@dataclasses.dataclass(frozen=True)
class ConfigCheck:
  """What :func:`check_config` found: the record, whether it exists, the accepted changes."""
  path: epath.Path
  exists: bool
  changes: tuple[Change, ...]


def _fmt(value: Any) -> str:
  return repr(tuple(value) if isinstance(value, list) else value)


def _finished(workdir: epath.Path, mode: str) -> epath.Path | None:
  """``<workdir>/metrics.json`` when it holds the results of a finished ``mode`` evaluation."""
  path = workdir / METRICS_FILE
  if mode not in EVALUATION_MODES or not path.exists():
    return None
  try:
    return path if json.loads(path.read_text()).get("mode") == mode else None
  except (ValueError, UnicodeDecodeError):
    return path  # damaged results: better not overwritten with another config's either


def check_config(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> ConfigCheck:
  """Compares ``config`` with the workdir's record of its mode; writes nothing.

  Returns the accepted changes (empty for a first run or an identical config).

  Raises:
    ConfigChangeError: a field outside :data:`RESUMABLE_FIELDS` differs (outside
      :data:`NEUTRAL_FIELDS` once an evaluation has written its ``metrics.json``), and
      ``config.allow_config_change`` is not set; the message names each field with the
      workdir's and this run's value.
    WorkdirError: see :func:`config_path`.
  """
  workdir = epath.Path(workdir)
  path = config_path(workdir, config.mode)
  if not path.exists():
    return ConfigCheck(path, False, ())
  stored = _flatten(_read_json(path, "the config the workdir was started with"))
  current = _flatten(_as_json(config))
  schema = _schema()
  finished = _finished(workdir, config.mode)
  allowed = NEUTRAL_FIELDS if finished else RESUMABLE_FIELDS
  override = bool(config.get(OVERRIDE_FIELD, False))
  changes, refused = [], []
  for field in sorted(current.keys() | stored.keys()):
    if (field not in current or field == OVERRIDE_FIELD
        or not _compared(field, config.mode, config.method)):
      continue
    old = stored.get(field, schema.get(field))
    new = current[field]
    if old == new:
      continue
    if field in NEUTRAL_FIELDS:
      changes.append(Change(field, old, new, "neutral"))
    elif field in allowed:
      changes.append(Change(field, old, new, "resumable"))
    else:
      refused.append(Change(field, old, new, OVERRIDE_FIELD))
  if refused and not override:
    listed = ", ".join(f"{c.field} {_fmt(c.old)} -> {_fmt(c.new)}" for c in refused)
    if finished:
      what = (f"holds a finished {config.mode} run ({finished}) scored with another config "
              f"({path}); scoring it again would replace its results")
      may = f"Only {', '.join(NEUTRAL_FIELDS)} may change for a finished evaluation"
    else:
      what = f"was started with another config ({path})"
      may = ("Only the number of steps, the logging, checkpoint and evaluation intervals, the data "
             "paths and the process coordinates may change when resuming "
             "(otcxr_jax.training.workdir.RESUMABLE_FIELDS)")
    raise ConfigChangeError(
        f"workdir {workdir} {what}; fields differ (workdir -> this run): {listed}. {may}. Use a "
        f"new workdir, or rerun with --config.{OVERRIDE_FIELD}=True to go on with the new "
        f"values (the change is recorded in {workdir / HISTORY_FILE}).")
  return ConfigCheck(path, True, tuple(changes + refused))


def _write_atomic(path: epath.Path, text: str) -> None:
  """Writes ``text`` to a temporary file renamed over ``path`` (never half-written)."""
  tmp = path.with_name(f"{path.name}.tmp")
  tmp.write_text(text)
  tmp.replace(path)


def save_config(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> epath.Path:
  """Records ``config`` as the workdir's config of its mode (process 0 writes).

  A first run writes the record. A rerun checks it first (:func:`check_config`): an identical
  config writes nothing; accepted changes rewrite the record with the values in effect, are
  printed, and are appended to ``config_history.jsonl``. Returns the record's path.

  Raises:
    ConfigChangeError, WorkdirError: as :func:`check_config`, before anything is written.
  """
  workdir = epath.Path(workdir)
  check = check_config(config, workdir)
  if jax.process_index() != 0 or (check.exists and not check.changes):
    return check.path
  workdir.mkdir(parents=True, exist_ok=True)
  if check.changes:
    _append_history(workdir, config.mode, check)
    listed = ", ".join(f"{c.field} {_fmt(c.old)} -> {_fmt(c.new)}" for c in check.changes)
    forced = [c.field for c in check.changes if c.allowed_by == OVERRIDE_FIELD]
    print(f"[workdir] {workdir}: config changed ({listed}"
          + (f"; accepted by {OVERRIDE_FIELD}: {', '.join(forced)}" if forced else "")
          + f"), recorded in {workdir / HISTORY_FILE}", flush=True)
  record = _as_json(config)
  if OVERRIDE_FIELD in record:
    record[OVERRIDE_FIELD] = False  # a permission of one invocation, not part of the run
  _write_atomic(check.path, json.dumps(record, indent=2))
  return check.path


def load_config(workdir: str | epath.PathLike) -> ml_collections.ConfigDict:
  """The config a run saved in ``<workdir>/config.json``, on top of today's defaults (locked).

  Raises:
    FileNotFoundError: the workdir has no ``config.json``.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: {workdir} is not the workdir of a run.")
  config = config_lib.base_config()
  config.update(_read_json(path, "the config the run was started with"))
  config.lock()
  return config


def _append_history(workdir: epath.Path, mode: str, check: ConfigCheck) -> None:
  """Appends one record to ``config_history.jsonl`` (rewritten whole: object stores cannot
  append)."""
  path = workdir / HISTORY_FILE
  lines = path.read_text().splitlines() if path.exists() else []
  record = {"time": _now(), "mode": mode, "config": check.path.name,
            "host": socket.gethostname(), "pid": os.getpid(),
            "changes": {c.field: {"old": c.old, "new": c.new, "allowed_by": c.allowed_by}
                        for c in check.changes}}
  lines.append(json.dumps(record))
  _write_atomic(path, "".join(f"{line}\n" for line in lines if line.strip()))


# --- the lock -----------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's process
  except OSError:
    return True
  return True


def _command() -> str:
  """This process's command line (``python -m otcxr_jax.main ...`` for the entry point)."""
  argv = list(sys.argv)
  if argv and argv[0].endswith(os.path.join("otcxr_jax", "main.py")):
    argv[0] = "python -m otcxr_jax.main"
  return " ".join(argv)


def _describe(holder: Mapping[str, Any]) -> str:
  command = holder.get("command")
  return (f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"
          + (f" ({command})" if command else ""))


def _stale_reason(holder: Mapping[str, Any] | None, now: float) -> str | None:
  """Why the lock of ``holder`` is stale, or None when its run may still be going."""
  if holder is None:
    return "its lock file cannot be read"
  if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
    if not _pid_alive(holder["pid"]):
      return f"no process {holder['pid']} runs on this host"
  beat = holder.get("heartbeat_unix")
  if isinstance(beat, (int, float)) and now - beat > STALE_AFTER_S:
    return f"its last heartbeat was {now - beat:.0f} s ago"
  return None


class _Lock:
  """``<workdir>/run.lock`` held by this process (see the module docstring)."""

  def __init__(self, workdir: epath.Path):
    self.workdir = workdir
    self.path = workdir / LOCK_FILE
    self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": _now(),
                   "command": _command(), "token": uuid.uuid4().hex}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _payload(self) -> str:
    return json.dumps({**self.holder, "heartbeat": _now(), "heartbeat_unix": time.time()},
                      indent=2)

  def _read(self) -> dict | None:
    try:
      holder = json.loads(self.path.read_text())
    except FileNotFoundError:
      raise
    except Exception:  # pylint: disable=broad-except
      return None
    return holder if isinstance(holder, dict) else None

  def _create(self) -> bool:
    """Creates the lock file unless it exists; ``True`` when this process now holds it."""
    payload = self._payload()
    if ckpt_lib.is_remote(self.path):
      if self.path.exists():
        return False
      self.path.write_text(payload)
      time.sleep(0.5)  # a run started at the same moment may have written in between
      return self._owned()
    tmp = self.path.with_name(f"{LOCK_FILE}.{self.holder['token']}.tmp")
    tmp.write_text(payload)
    try:
      os.link(tmp, self.path)  # atomic, and the lock is never seen half-written
      return True
    except FileExistsError:
      return False
    except OSError:  # no hard links here (some network and FUSE filesystems): exclusive create
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w") as f:
        f.write(payload)
      return True
    finally:
      tmp.unlink(missing_ok=True)

  def _owned(self) -> bool:
    try:
      holder = self._read()
    except FileNotFoundError:
      return False
    return holder is not None and holder.get("token") == self.holder["token"]

  def acquire(self) -> None:
    """Takes the lock, over a stale one with a warning.

    Raises:
      WorkdirInUseError: another run holds it; the message names it and the lock file.
    """
    self.workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
      if self._create():
        self._start_heartbeat()
        return
      try:
        holder = self._read()
      except FileNotFoundError:
        continue  # released meanwhile
      reason = _stale_reason(holder, time.time())
      if reason is None:
        raise WorkdirInUseError(
            f"workdir {self.workdir} is in use by another run: {_describe(holder)}; lock file "
            f"{self.path}. Wait for that run to end, or delete the lock file if it is gone.")
      _warn(f"taking over the stale lock {self.path} ("
            + (_describe(holder) if holder else "unreadable") + f"): {reason}.")
      self.path.unlink(missing_ok=True)
    raise WorkdirInUseError(f"workdir {self.workdir}: could not take the lock {self.path} (other "
                            f"runs are starting on it at the same time).")

  def _start_heartbeat(self) -> None:
    def beat():
      while not self._stop.wait(HEARTBEAT_S):
        try:
          if not self._owned():
            _warn(f"the lock {self.path} was taken over by another run; this run goes on "
                  f"without it.")
            return
          _write_atomic(self.path, self._payload())
        except Exception as e:  # pylint: disable=broad-except
          _warn(f"could not refresh the lock {self.path}: {e}")
    self._thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
    try:
      if self._owned():
        self.path.unlink(missing_ok=True)
    except Exception as e:  # pylint: disable=broad-except
      _warn(f"could not remove the lock {self.path}: {e}")


def _all_processes_agree(ok: bool) -> bool:
  """Process 0's ``ok`` on every process (one tiny broadcast when several processes run)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def _release_on_sigterm(lock: _Lock) -> Iterator[None]:
  """Outside the train loop (which turns SIGTERM into a checkpoint and ``Preempted``) a SIGTERM
  still ends the process as before, after releasing the lock."""
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return

  def handle(signum, frame):
    del frame
    lock.release()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)

  signal.signal(signal.SIGTERM, handle)
  try:
    yield
  finally:
    if signal.getsignal(signal.SIGTERM) is handle:
      signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --- the guard ----------------------------------------------------------------------------------

_HELD: dict[str, int] = {}  # workdirs this process guards -> nesting depth (demo runs pretrain)


def _key(workdir: epath.Path) -> str:
  return os.fspath(ckpt_lib.absolute(workdir))


@contextlib.contextmanager
def open_run(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> Iterator[None]:
  """Locks ``workdir`` and checks ``config`` against its record; records it when the run ends.

  Nested on the same workdir in one process (``demo`` runs ``pretrain.run``) it does nothing.

  Raises:
    WorkdirInUseError: another run holds the workdir.
    ConfigChangeError, WorkdirError: as :func:`check_config`.
  """
  workdir = epath.Path(workdir)
  key = _key(workdir)
  if key in _HELD:
    _HELD[key] += 1
    try:
      yield
    finally:
      _HELD[key] -= 1
    return
  main = jax.process_index() == 0
  created = main and not workdir.exists()
  lock = _Lock(workdir) if main else None
  problem = None
  if lock is not None:
    try:
      lock.acquire()
    except WorkdirInUseError as e:
      problem = e
  if not _all_processes_agree(problem is None):
    raise problem or WorkdirInUseError(f"workdir {workdir} is in use by another run (process 0 "
                                       f"found its lock {workdir / LOCK_FILE} held).")
  _HELD[key] = 1
  try:
    with _release_on_sigterm(lock) if lock is not None else contextlib.nullcontext():
      check_config(config, workdir)
      yield
      save_config(config, workdir)
  finally:
    del _HELD[key]
    if lock is not None:
      lock.release()
    if created:
      with contextlib.suppress(Exception):  # tidying only: never hides the run's own outcome
        if workdir.exists() and not any(workdir.iterdir()):
          workdir.rmdir()  # a run that stopped before writing anything leaves nothing


def guarded(run: Callable[..., Any]) -> Callable[..., Any]:
  """Decorates a mode's ``run(config, workdir, ...)`` with :func:`open_run`."""

  @functools.wraps(run)
  def wrapper(config: ml_collections.ConfigDict, workdir, *args, **kwargs):
    with open_run(config, workdir):
      return run(config, workdir, *args, **kwargs)

  return wrapper
