"""What the experiment configs share: their ``get_config(arg)`` argument and the datasets.

A config family is one file per mode whose ``get_config(arg)`` takes the text after a colon on the
command line (ml_collections ``config_flags``, as in big_vision)::

    python -m otcxr_jax.main --config configs/linear_probe.py:dataset=nih

:func:`parse_arg` reads it (``key=value`` items separated by commas, a bare ``key`` meaning
``True``); each family lists the arguments of its experiments in ``VARIANTS``
(tests/test_configs.py validates every one). Without ``--workdir`` a run writes to
``workdirs/<file>_<values>`` (``workdirs/linear_probe_nih``; ``otcxr_jax.main.default_workdir``).

Evaluation configs name the run they read (:data:`PRETRAINING`), not its network: the run's
``config.json`` gives it (``otcxr_jax/modes/network.py``).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from otcxr_jax import config_lib

# Short dataset names -> TFDS dataset names (packages under tfds_builders/).
DATASETS = {
    "nih": "nih_chest_xray14",
    "rsna": "rsna_pneumonia",
    "vinbig": "vinbig_cxr",
    "siim": "siim_acr_pneumothorax",
    "synthetic": "synthetic_cxr",
}
# The pretraining run whose encoder each dataset's evaluations read: the synthetic demo's
# (configs/demo.py), or the paper's NIH ChestX-ray14 pretraining (configs/pretrain_nih.py) for
# every real dataset.
PRETRAINING = {name: "workdirs/pretrain_nih" for name in DATASETS}
PRETRAINING["synthetic"] = "workdirs/demo"
REAL_RESOLUTION = 224  # the real datasets are built and read at 224x224 (the paper's input)


def parse_arg(arg: str | None, config_file: str, **spec: Any) -> ml_collections.ConfigDict:
  """The fields of a config file's argument, ``'dataset=nih,fraction=1pct'`` or ``'tiny'``.

  Args:
    arg: the text after the colon (None or '' when there is none).
    config_file: the config file's name, quoted in errors.
    **spec: each accepted key: its default (a value, ``False`` for a flag), or a tuple of the
      accepted values (a required key); a ``(default, accepted values)`` pair for an optional key
      with accepted values.

  Returns:
    A locked ConfigDict of every key of ``spec`` (defaults filled).

  Raises:
    ValueError: an unknown key, a missing required key or a value that is not accepted.
  """
  given: dict[str, Any] = {}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in spec:
      raise ValueError(f"{config_file}: unknown argument {key!r} in {arg!r}; expected "
                       f"{', '.join(spec)}.")
    given[key] = value.strip() if sep else True
  out = {}
  for key, rule in spec.items():
    default, accepted = _rule(rule)
    value = given.get(key, default)
    if value is _REQUIRED:
      raise ValueError(f"{config_file}: argument {key}= is required (one of "
                       f"{', '.join(map(str, accepted))}), e.g. --config {config_file}:{key}="
                       f"{accepted[0]}.")
    if isinstance(default, bool) and isinstance(value, str):
      value = {"true": True, "false": False}.get(value.lower(), value)
    if accepted is not None and value != default and value not in accepted:
      raise ValueError(f"{config_file}: {key}={value!r}: expected one of "
                       f"{', '.join(map(str, accepted))}.")
    if isinstance(default, bool) and not isinstance(value, bool):
      raise ValueError(f"{config_file}: {key}={value!r}: expected a flag ({key} or {key}=false).")
    out[key] = value
  parsed = ml_collections.ConfigDict(out)
  parsed.lock()
  return parsed


_REQUIRED = object()


def _rule(rule: Any) -> tuple[Any, tuple | None]:
  """``(default, accepted values or None)`` of a :func:`parse_arg` spec entry."""
  if isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[1], tuple):
    return rule
  if isinstance(rule, tuple):
    return _REQUIRED, rule
  return rule, None


def evaluation_config(mode: str, dataset: str) -> ml_collections.ConfigDict:
  """The defaults of ``config_lib.base_config`` with the evaluation's mode and dataset.

  The real datasets are read at 224x224 with 8 reader threads; the synthetic evaluations read the
  demo's dataset and use its linear-probe settings (``probe``: the demo's learning rate, steps,
  grid and labelled training images), the data and probe the demo's own linear probe was
  measured with.
  """
  c = config_lib.base_config()
  c.mode = mode
  d = c.data
  d.name = DATASETS[dataset]
  if dataset == "synthetic":
    from configs import demo
    pretraining = demo.get_config()
    for field in ("name", "config", "image_size", "synthetic_patients"):
      d[field] = pretraining.data[field]
    c.probe = pretraining.probe
  else:
    d.config = str(REAL_RESOLUTION)
    d.image_size = REAL_RESOLUTION
    d.num_threads = 8
  return c


def pretraining_network(dataset: str) -> ml_collections.ConfigDict:
  """The config of the pretraining run whose network evaluations of ``dataset`` read (for an
  evaluation that reads no run and states that network itself, e.g. training from scratch)."""
  if dataset == "synthetic":
    from configs import demo
    return demo.get_config()
  from configs import pretrain_nih
  return pretrain_nih.get_config()


def state_network(c: ml_collections.ConfigDict, pretraining: ml_collections.ConfigDict) -> None:
  """Sets ``c``'s network fields to those of the ``pretraining`` config: ``method``, ``model`` and
  the method's section (``objective`` for OTCXR), the fields a run read by an evaluation gives."""
  c.method = pretraining.method
  c.model = pretraining.model
  section = config_lib.METHOD_SECTIONS[pretraining.method]
  c[section] = pretraining[section]
