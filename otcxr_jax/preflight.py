"""Preflight of a TPU VM's workers before a run: each worker reports, the launcher checks them all.

On each worker (``launch.sh`` runs it on ``--worker=all``)::

    .venv/bin/python -m otcxr_jax.preflight

prints one line, e.g.::

    otcxr-preflight process=0 processes=4 host=t1v-n-0 python=3.11.13 jax=0.10.2 jaxlib=0.10.2
    backend=tpu kind=TPU_v4 local_devices=4 devices=16

(one line; values never hold spaces). On the launching machine, the collected output of all
workers (``gcloud`` mixes its own messages in; only these lines count) is checked with::

    python3 -m otcxr_jax.preflight --check [--backend tpu] < output

which prints a one-line summary, or names what is wrong and exits with status 1: a worker without
a line, a Python older than the requirements accept, workers with different Python or jax
versions, another backend than expected, or device counts that do not add up. This module
imports only the standard library at load time (the launching machine need not have jax).
"""

from __future__ import annotations

import argparse
import sys

PREFIX = "otcxr-preflight"
MIN_PYTHON = (3, 11)  # jax/jaxlib 0.10.2 (requirements.txt) need Python >= 3.11
_INT_FIELDS = ("process", "processes", "local_devices", "devices")
_FIELDS = ("process", "processes", "host", "python", "jax", "jaxlib", "backend", "kind",
           "local_devices", "devices")


class PreflightError(ValueError):
  """The workers' reports are missing, malformed or inconsistent."""


def report() -> str:
  """This worker's line (initialises jax's backend: on a TPU slice, with every worker)."""
  import platform
  import socket

  import jax
  import jaxlib

  fields = {"process": jax.process_index(), "processes": jax.process_count(),
            "host": socket.gethostname(), "python": platform.python_version(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend(), "kind": jax.devices()[0].device_kind,
            "local_devices": jax.local_device_count(), "devices": jax.device_count()}
  return " ".join([PREFIX] + [f"{k}={str(v).replace(' ', '_')}" for k, v in fields.items()])


def parse(text: str) -> list[dict]:
  """The reports in ``text`` (lines starting with ``otcxr-preflight``), in process order."""
  records = []
  for line in text.splitlines():
    words = line.strip().split()
    if not words or words[0] != PREFIX:
      continue
    record = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    missing = [k for k in _FIELDS if k not in record]
    if missing:
      raise PreflightError(f"a preflight line lacks {', '.join(missing)}: {line.strip()}")
    try:
      record.update({k: int(record[k]) for k in _INT_FIELDS})
    except ValueError as e:
      raise PreflightError(f"a preflight line has a non-integer count ({e}): {line.strip()}")
    records.append(record)
  return sorted(records, key=lambda r: r["process"])


def _version(text: str) -> tuple[int, ...]:
  return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def check(text: str, backend: str | None = "tpu") -> str:
  """Checks the workers' reports in ``text`` together; returns a one-line summary.

  Raises:
    PreflightError: no report, a Python older than :data:`MIN_PYTHON`, differing versions, an
      unexpected backend, a worker missing or twice, or device counts that do not add up.
  """
  records = parse(text)
  if not records:
    raise PreflightError(f"no worker printed a '{PREFIX}' line (did `launch.sh tpu-install` "
                         "finish on every worker?)")
  for r in records:
    if _version(r["python"]) < MIN_PYTHON:
      raise PreflightError(f"worker {r['process']} ({r['host']}) runs Python {r['python']}; "
                           f"the requirements need >= {'.'.join(map(str, MIN_PYTHON))}")
    if backend and r["backend"] != backend:
      raise PreflightError(f"worker {r['process']} ({r['host']}) sees backend "
                           f"'{r['backend']}' ({r['kind']}), not '{backend}'")
  for key in ("python", "jax", "jaxlib", "processes", "devices"):
    values = sorted({str(r[key]) for r in records})
    if len(values) > 1:
      raise PreflightError(f"the workers differ in {key}: {', '.join(values)}")
  first = records[0]
  processes = [r["process"] for r in records]
  if processes != list(range(first["processes"])):
    raise PreflightError(f"jax counts {first['processes']} processes but the reports are of "
                         f"processes {processes} (a worker did not report, or reported twice)")
  local = sum(r["local_devices"] for r in records)
  if local != first["devices"]:
    raise PreflightError(f"the workers' local devices add up to {local}, but jax sees "
                         f"{first['devices']} devices")
  return (f"preflight: {len(records)} worker(s), Python {first['python']}, jax {first['jax']} "
          f"(jaxlib {first['jaxlib']}), {first['devices']} x {first['kind'].replace('_', ' ')} "
          f"({first['backend']}, {first['local_devices']} per worker)")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m otcxr_jax.preflight", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--check", action="store_true",
                      help="check the workers' lines read from stdin instead of reporting")
  parser.add_argument("--backend", default="tpu",
                      help="the backend every worker must see ('' accepts any; default tpu)")
  args = parser.parse_args(argv)
  if not args.check:
    print(report(), flush=True)
    return 0
  try:
    print(check(sys.stdin.read(), backend=args.backend or None))
  except PreflightError as e:
    print(f"preflight failed: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
