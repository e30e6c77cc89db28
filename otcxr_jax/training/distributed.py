"""Multi-process runs: ``jax.distributed`` set up from the config, the environment or the cluster.

One process runs per host (TPU VM worker, SLURM task, ...). Each process sees its local devices;
after :func:`initialize` every process sees all devices (``jax.devices()``), the ``('data',)``
mesh spans them, and each process feeds its own slice of every global batch
(``sharding.to_global``). Checkpoints are written and restored by all processes together (orbax
coordinates them through the distributed runtime), so the workdir must be shared: a ``gs://``
bucket or a shared filesystem.

Where the coordinates come from, first match wins for each of the three:

1. the config: ``distributed.coordinator_address`` (``'host:port'`` of process 0),
   ``distributed.num_processes``, ``distributed.process_id``;
2. the environment: ``OTCXR_COORDINATOR_ADDRESS``, ``OTCXR_NUM_PROCESSES``, ``OTCXR_PROCESS_ID``
   (and JAX's own ``JAX_COORDINATOR_ADDRESS``);
3. JAX's cluster detection (Cloud TPU VMs and GKE TPU slices, SLURM, Open MPI, Kubernetes), which
   fills whatever is still unset. Under SLURM each task uses the GPU numbered ``SLURM_LOCALID``
   (one task per GPU), or every GPU of its node when it is the node's only task
   (:func:`slurm_local_device_ids`).

With none of them (a laptop, one GPU, Colab) the run stays single-process and nothing is
initialised; ``num_processes=1`` forces that even inside a cluster.

Console lines that would otherwise repeat once per host go through :func:`print0`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

import jax
import ml_collections
from absl import logging

ENV_COORDINATOR_ADDRESS = "OTCXR_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "OTCXR_NUM_PROCESSES"
ENV_PROCESS_ID = "OTCXR_PROCESS_ID"
JAX_ENV_COORDINATOR_ADDRESS = "JAX_COORDINATOR_ADDRESS"  # read by jax.distributed itself


@dataclasses.dataclass(frozen=True)
class Coordinates:
  """What is known of the process group before JAX's cluster detection; ``None`` = unknown."""
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @property
  def any_set(self) -> bool:
    return any(v is not None for v in dataclasses.astuple(self))


def check_address(address: str, field: str) -> None:
  """Raises ValueError unless ``address`` is ``'host:port'`` with a port in 1..65535."""
  host, sep, port = address.rpartition(":")
  if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
    raise ValueError(f"{field}={address!r}: expected 'host:port' of process 0, e.g. "
                     "'10.0.0.2:1234'.")


def _env_int(environ: Mapping[str, str], name: str, minimum: int) -> int | None:
  raw = environ.get(name, "").strip()
  if not raw:
    return None
  try:
    value = int(raw)
  except ValueError:
    value = None
  if value is None or value < minimum:
    raise ValueError(f"environment variable {name}={raw!r}: expected an integer >= {minimum}.")
  return value


def coordinates(config: ml_collections.ConfigDict,
                environ: Mapping[str, str] | None = None) -> Coordinates:
  """The process-group coordinates of ``config.distributed``, completed from the environment.

  Config fields at their defaults (``coordinator_address=''``, ``num_processes=0``,
  ``process_id=-1``) mean "not set" and fall back to ``OTCXR_COORDINATOR_ADDRESS`` (or
  ``JAX_COORDINATOR_ADDRESS``), ``OTCXR_NUM_PROCESSES`` and ``OTCXR_PROCESS_ID``.

  Raises:
    ValueError: an environment variable holds something other than the expected value, or the
      process id is not below the number of processes.
  """
  environ = os.environ if environ is None else environ
  d = config.distributed
  address = (d.coordinator_address or environ.get(ENV_COORDINATOR_ADDRESS, "").strip()
             or environ.get(JAX_ENV_COORDINATOR_ADDRESS, "").strip() or None)
  if address and not d.coordinator_address:
    check_address(address, f"environment variable {ENV_COORDINATOR_ADDRESS}")
  count = d.num_processes if d.num_processes > 0 else _env_int(environ, ENV_NUM_PROCESSES, 1)
  index = d.process_id if d.process_id >= 0 else _env_int(environ, ENV_PROCESS_ID, 0)
  if count is not None and index is not None and index >= count:
    raise ValueError(f"process id {index} must be below the number of processes {count} "
                     f"(config.distributed / {ENV_PROCESS_ID}, {ENV_NUM_PROCESSES}).")
  return Coordinates(address, count, index)


def detected_cluster() -> str | None:
  """The cluster environment JAX's auto-detection recognises here (class name), or ``None``.

  These are the environments ``jax.distributed.initialize()`` can complete its arguments from
  (``jax._src.clusters``; the opt-in-only ``mpi4py`` method is left out, as JAX's default does).
  """
  from jax._src import clusters  # the registry jax.distributed.initialize() consults
  for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if not env.opt_in_only_method and env.is_env_present():
      return env.__name__
  return None


def slurm_local_device_ids(environ: Mapping[str, str]) -> list[int] | None:
  """Every GPU of the node for a SLURM job step with one task per node; else ``None``.

  JAX's SLURM detection gives each task the single GPU numbered ``SLURM_LOCALID``, right for one
  task per GPU (``--ntasks-per-node`` = GPUs per node) but leaving all GPUs but one idle with one
  task per node. Then this lists the node's GPUs, counted in ``CUDA_VISIBLE_DEVICES`` (which SLURM
  sets to the step's GPUs), so the task keeps them all.
  """
  per_node = environ.get("SLURM_NTASKS_PER_NODE") or environ.get("SLURM_STEP_TASKS_PER_NODE", "")
  visible = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
  if not visible or re.fullmatch(r"1(\(x\d+\))?", per_node.strip()) is None:
    return None
  return list(range(len(visible.split(","))))


def is_main() -> bool:
  """Whether this is process 0: the one that prints run-level lines and writes shared files."""
  return jax.process_index() == 0


def print0(*args: object, **kwargs) -> None:
  """``print`` on process 0 only (flushed unless ``flush=False``): one line per run, not per
  host."""
  if is_main():
    kwargs.setdefault("flush", True)
    print(*args, **kwargs)


def initialize(config: ml_collections.ConfigDict,
               environ: Mapping[str, str] | None = None) -> bool:
  """Initialises ``jax.distributed`` when the run is multi-process; call before any JAX use.

  See the module docstring for where the coordinates come from. Does nothing (and returns
  ``False``) for a single-process run; returns ``True`` when the distributed runtime is up (also
  when it was initialised before this call).

  Raises:
    ValueError: the coordinates are invalid, or only part of them is given and no cluster
      environment supplies the rest.
    RuntimeError: (from JAX) a JAX computation already initialised the backend.
  """
  if jax.distributed.is_initialized():
    return True
  coords = coordinates(config, environ)
  if coords.num_processes == 1:
    return False
  cluster = detected_cluster()
  if cluster is None:
    if not coords.any_set:
      return False
    missing = [f.name for f in dataclasses.fields(coords) if getattr(coords, f.name) is None]
    if missing:
      raise ValueError(
          f"a multi-process run needs distributed.{', distributed.'.join(missing)} as well (no "
          f"cluster environment supplies them here; given: {coords}). Set every one of "
          f"config.distributed.coordinator_address/num_processes/process_id, or the environment "
          f"variables {ENV_COORDINATOR_ADDRESS}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}.")
  environ = os.environ if environ is None else environ
  local_devices = slurm_local_device_ids(environ) if cluster == "SlurmCluster" else None
  jax.distributed.initialize(coordinator_address=coords.coordinator_address,
                             num_processes=coords.num_processes, process_id=coords.process_id,
                             local_device_ids=local_devices)
  logging.info("jax.distributed: process %d of %d (%s), %d local / %d global devices",
               jax.process_index(), jax.process_count(), cluster or "explicit coordinates",
               jax.local_device_count(), jax.device_count())
  return True
