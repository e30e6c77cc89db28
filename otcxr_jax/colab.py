"""What the Colab notebook installs: the requirements Colab lacks, never over its accelerator's jax.

Colab's runtimes come with jax built for their accelerator (CUDA on a GPU runtime, libtpu on a
TPU runtime) and with full TensorFlow. Installing ``requirements.txt`` as is would put the CPU
``jax``/``jaxlib`` and ``tensorflow-cpu`` over them. :func:`pip_args` instead keeps:

* ``jax``/``jaxlib`` when the installed jax is the pinned version; otherwise it installs the
  pinned version *for the runtime's accelerator*: ``jax[cuda12]``, ``jax[tpu]`` or ``jax``;
* ``tensorflow-cpu`` and ``tensorboard`` whenever TensorFlow (any build) or TensorBoard is there
  (they only write TensorBoard files);

and installs every other requirement that is missing or at another version than pinned.
Standard library only: the notebook imports it before anything is installed.
"""

from __future__ import annotations

import os
import re
import shutil
from importlib import metadata
from typing import Callable, Mapping

_JAX = ("jax", "jaxlib")
_TENSORFLOW = ("tensorflow-cpu", "tensorboard")
_EXTRA = {"gpu": "cuda12", "tpu": "tpu"}


def _normalise(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def accelerator() -> str:
  """'tpu', 'gpu' or 'cpu': the Colab runtime's accelerator (Runtime > Change runtime type)."""
  vfio = os.listdir("/dev/vfio") if os.path.isdir("/dev/vfio") else []  # v5e and later chips
  if (os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0")
      or any(n.isdigit() for n in vfio)):
    return "tpu"
  if shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0"):
    return "gpu"
  return "cpu"


def installed_versions() -> dict[str, str]:
  """``{normalised distribution name: version}`` of this interpreter's packages."""
  return {_normalise(d.metadata["Name"]): d.version for d in metadata.distributions()
          if d.metadata["Name"]}


def requirements(text: str) -> list[tuple[str, str, str]]:
  """``(name, extras, specifier)`` of each requirement line (comments and options left out)."""
  out = []
  for line in text.splitlines():
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
      continue
    match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)", line)
    if match:
      out.append((match.group(1), match.group(2) or "", match.group(3).strip()))
  return out


def pip_args(text: str, *, installed: Mapping[str, str] | None = None,
             device: str | Callable[[], str] = accelerator) -> list[str]:
  """The ``pip install`` arguments for ``requirements.txt``'s ``text`` on this runtime.

  Args:
    text: the requirements file's text.
    installed: ``{name: version}`` of installed packages (default: this interpreter's).
    device: 'cpu', 'gpu' or 'tpu' (default: :func:`accelerator`).
  """
  installed = {_normalise(k): v for k, v in
               (installed_versions() if installed is None else installed).items()}
  device = device() if callable(device) else device
  args = []
  for name, extras, spec in requirements(text):
    key = _normalise(name)
    pinned = spec[2:].strip() if spec.startswith("==") else None
    if key == "jax":
      if installed.get("jax") != pinned:
        extra = _EXTRA.get(device)
        args.append(f"jax[{extra}]{spec}" if extra else f"jax{spec}")
      continue
    if key == "jaxlib":
      if installed.get("jax") != pinned and device not in _EXTRA:
        args.append(f"{name}{spec}")  # the accelerator extras above bring their own jaxlib
      continue
    if key in _TENSORFLOW and ({"tensorflow", "tensorflow-cpu"} & set(installed)
                               if key == "tensorflow-cpu" else key in installed):
      continue
    if key not in installed or (pinned is not None and installed[key] != pinned):
      args.append(f"{name}{extras}{spec}")
  return args
