"""A run's final results in TensorBoard, beside its JSON: scalars and the report's PNG figures.

Training curves reach TensorBoard through :class:`~otcxr_jax.training.writers.MetricLog`
(``<workdir>/tensorboard/<run>``). The evaluation modes (and the demo and the report) end with a
``metrics.json`` and PNG figures; :func:`write_results` puts the same numbers and pictures in
``<workdir>/tensorboard/<name>``, so one ``tensorboard --logdir <workdir>/tensorboard`` shows the
whole run, headline AUC included:

* scalars: every number of the result, nested keys joined by ``/`` (``test/mean_auc``,
  ``probes/OTCXR/test_mean_auc``, ``probes/OTCXR/test_mean_auc_ci95/0``); spaces and commas in
  names become ``_``; booleans, strings, ``None`` and non-finite numbers are left out;
* image summaries: the PNG files of the workdir and of its ``figures/`` folder, tagged by their
  path without ``.png`` (``figures/auc_per_class``, ``validation_curve``).

Only process 0 writes. ``clu.metric_writers`` imports TensorFlow, so it is imported here only
when something is written.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from etils import epath

FIGURE_FOLDERS = ("", "figures")


def flatten_scalars(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """The finite numbers of a nested result, keyed by their ``/``-joined path."""
  out = {}
  items = result.items() if isinstance(result, Mapping) else enumerate(result)
  for key, value in items:
    name = f"{prefix}{re.sub(r'[ ,]+', '_', str(key))}"
    if isinstance(value, (Mapping, list, tuple)):
      out.update(flatten_scalars(value, f"{name}/"))
    elif (isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(float(value))):
      out[name] = float(value)
  return out


def figure_paths(workdir: str | epath.PathLike) -> list[epath.Path]:
  """The PNG figures of a workdir: its own and those of its ``figures/`` folder."""
  workdir = epath.Path(workdir)
  paths = []
  for folder in FIGURE_FOLDERS:
    directory = workdir / folder if folder else workdir
    if directory.is_dir():
      paths += sorted(p for p in directory.glob("*.png"))
  return paths


def _image(path: epath.Path) -> np.ndarray:
  from PIL import Image
  with Image.open(io.BytesIO(path.read_bytes())) as im:
    return np.asarray(im.convert("RGB"))


def write_results(workdir: str | epath.PathLike, name: str,
                  result: Mapping[str, Any] | None = None, *, step: int = 0,
                  figures: Sequence[str | epath.PathLike] | None = None,
                  enabled: bool = True) -> epath.Path | None:
  """Writes ``result``'s scalars and the figures to ``<workdir>/tensorboard/<name>``.

  Args:
    workdir: the run's workdir (local or ``gs://...``).
    name: the run (TensorBoard shows it as ``<name>``): the mode, e.g. ``linear_probe``.
    result: what the run wrote to ``metrics.json`` (nested mappings and lists of numbers).
    step: the step the results belong to (the demo: its last pretraining step).
    figures: PNG files to add as image summaries; default: :func:`figure_paths` of ``workdir``.
    enabled: ``config.train.tensorboard``; False writes nothing.

  Returns:
    The event folder, or None where nothing was written (disabled, or not process 0).
  """
  if not enabled or jax.process_index() != 0:
    return None
  from clu import metric_writers  # imports TensorFlow: only here, only on process 0
  workdir = epath.Path(workdir)
  folder = workdir / "tensorboard" / name
  paths = figure_paths(workdir) if figures is None else [epath.Path(p) for p in figures]
  writer = metric_writers.SummaryWriter(str(folder))
  try:
    scalars = flatten_scalars(result or {})
    if scalars:
      writer.write_scalars(step, scalars)
    images = {}
    for path in paths:
      relative = str(path.relative_to(workdir)) if str(path).startswith(str(workdir)) else path.name
      images[relative.removesuffix(".png")] = _image(path)[None]
    if images:
      writer.write_images(step, images)
    writer.flush()
  finally:
    writer.close()
  return folder
