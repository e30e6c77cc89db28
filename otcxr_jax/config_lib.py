"""The configuration schema: every field with its default, and validation before any compute.

Experiment files in ``configs/`` start from :func:`base_config` and override fields. The config is
locked by ``config_flags``, so a misspelt field (in a file or on the command line) is refused;
:func:`validate` then checks values and cross-field constraints, naming the field and what was
expected, before any data is read or any array is allocated.
"""

from __future__ import annotations

from typing import Any, Iterable

import ml_collections
from ml_collections import config_dict

MODES = ("demo", "pretrain", "linear_probe", "knn", "build_dataset")
PROBE_INITS = ("pretrained", "random")
ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "vit_s16", "vit_b16")
COMPUTE_DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A config field has a value the run cannot use."""


def base_config() -> ml_collections.ConfigDict:
  """Every field a run reads, with the documented defaults (paper-scale pretraining)."""
  c = ml_collections.ConfigDict()
  c.mode = "pretrain"
  c.seed = 0

  c.data = dict(
      name="synthetic_cxr",        # TFDS dataset name (a package under tfds_builders/)
      config="128",                # TFDS builder config (the stored resolution)
      data_dir="~/tensorflow_datasets",
      manual_dir=config_dict.placeholder(str),  # real datasets: the hand download
      synthetic_patients=0,        # synthetic_cxr only: >0 builds a cohort of that size
      train_split="train",
      val_split="validation",
      test_split="test",
      image_size=128,              # encoder input side (augmented views are resized to it)
      num_threads=2,               # grain reader threads
  )
  c.augment = dict(
      crop_scale=(0.25, 1.0),
      crop_ratio=(3 / 4, 4 / 3),
      rotation_deg=10.0,
      brightness=0.2,
      contrast=0.2,
      gamma=(0.8, 1.25),
      blur_prob=0.5,
      blur_sigma=(0.1, 1.5),
      noise_prob=0.5,
      noise_std=(0.0, 0.03),
      hflip_prob=0.0,              # off: laterality matters in chest X-rays
  )
  c.model = dict(
      encoder="resnet50",
      width=1.0,                   # ResNet channel multiplier
      stem="imagenet",             # 'imagenet' (7x7/2 + max-pool) or 'small' (3x3, no pool)
      stem_stride=1,               # small stem only
      in_channels=1,
      dense_stage="dense",         # 'dense' = last stage; or a stage name such as 'stage3'
      projector_hidden=2048,
      projector_dim=512,
      projector_layers=2,
      cvsim=True,
      cvsim_heads=4,
      cvsim_mlp_ratio=2.0,
  )
  c.objective = dict(
      name="otcxr",
      alpha=50.0,                  # weight of L_OT
      beta=12.5,                   # weight of each view's variance term
      eta=1.0,                     # weight of each view's covariance term
      epsilon=0.05,                # entropic regularisation (absolute, cost in [0, 2])
      num_iters=50,                # fixed Sinkhorn iterations
      cost="cosine",
      lse_mode=config_dict.placeholder(bool),  # None: kernel mode where it is safe
      grad_mode="fixed",
      center_tokens=True,          # OT cost on per-image centred tokens (see objectives/otcxr.py)
      location_weight=0.0,         # λ of the crop-geometry location prior in the OT cost
      varcov_per_position=False,   # var/cov over the batch at each position, then averaged
  )
  c.optim = dict(
      name="lars",
      base_learning_rate=0.2,      # peak lr = base * batch / 256
      weight_decay=1e-6,
      momentum=0.9,
      b1=0.9,
      b2=0.999,
      warmup_steps=1000,
      grad_clip_norm=0.0,
  )
  c.train = dict(
      batch_size=256,              # global, over all devices and processes
      num_steps=100_000,
      log_every=50,
      checkpoint_every=1000,
      keep_checkpoints=2,
      compute_dtype="float32",     # 'bfloat16': bf16 activations, fp32 parameters
      tensorboard=True,
      on_nonfinite="stop",         # non-finite loss/gradient: 'stop' (raise) or 'skip' the update
  )
  c.probe = dict(
      batch_size=256,              # feature extraction and probe training
      num_steps=1000,
      learning_rate=1e-2,
      weight_decays=(1e-5, 1e-4, 1e-3, 1e-2),   # chosen on validation mean AUC
      pixel_floor_size=16,         # raw-pixel floor: images downsampled to this side
      init="pretrained",           # linear_probe/knn encoder: 'pretrained' or 'random'
      checkpoint_dir="",           # '' = <workdir>/checkpoints/pretrain
  )
  c.knn = dict(
      k=20,                        # neighbours voting (weighted kNN, Wu et al. 2018)
      temperature=0.07,            # T of the vote weights exp(cosine / T)
  )
  c.report = dict(
      num_correspondences=12,      # strongest transport-plan matches drawn
  )
  return c


def _require(ok: bool, field: str, value: Any, expected: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}={value!r}: expected {expected}.")


def _positive(c, fields: Iterable[str]) -> None:
  for f in fields:
    v = _get(c, f)
    _require(isinstance(v, (int, float)) and v > 0, f, v, "a positive number")


def _get(c, dotted: str):
  node = c
  for part in dotted.split("."):
    node = node[part]
  return node


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` naming the first invalid field."""
  _require(c.mode in MODES, "mode", c.mode, f"one of {MODES}")
  if c.mode == "build_dataset":
    _require(bool(c.data.name), "data.name", c.data.name, "a dataset name")
    return
  _require(c.model.encoder in ENCODERS, "model.encoder", c.model.encoder, f"one of {ENCODERS}")
  _require(c.model.stem in ("imagenet", "small"), "model.stem", c.model.stem,
           "'imagenet' or 'small'")
  _require(c.model.in_channels in (1, 3), "model.in_channels", c.model.in_channels, "1 or 3")
  _require(c.train.compute_dtype in COMPUTE_DTYPES, "train.compute_dtype", c.train.compute_dtype,
           f"one of {COMPUTE_DTYPES}")
  from otcxr_jax.training import loop  # the policies LoopConfig accepts
  _require(c.train.on_nonfinite in loop.NONFINITE_POLICIES, "train.on_nonfinite",
           c.train.on_nonfinite, f"one of {loop.NONFINITE_POLICIES}")
  _positive(c, ["data.image_size", "model.width", "model.projector_hidden", "model.projector_dim",
                "model.projector_layers", "model.cvsim_heads", "train.batch_size",
                "train.num_steps", "train.log_every", "optim.base_learning_rate",
                "probe.batch_size", "probe.num_steps", "probe.learning_rate"])
  _require(c.probe.init in PROBE_INITS, "probe.init", c.probe.init, f"one of {PROBE_INITS}")
  _require(isinstance(c.probe.checkpoint_dir, str), "probe.checkpoint_dir", c.probe.checkpoint_dir,
           "a directory path ('' for <workdir>/checkpoints/pretrain)")
  _require(isinstance(c.knn.k, int) and not isinstance(c.knn.k, bool) and c.knn.k >= 1, "knn.k",
           c.knn.k, "a positive int")
  _positive(c, ["knn.temperature"])
  _require(c.model.encoder.startswith("resnet") or c.data.image_size % 16 == 0, "data.image_size",
           c.data.image_size, "a multiple of 16 for a ViT/16 encoder")
  _require(c.model.projector_dim % c.model.cvsim_heads == 0 or not c.model.cvsim,
           "model.cvsim_heads", c.model.cvsim_heads,
           f"a divisor of model.projector_dim={c.model.projector_dim}")
  _require(c.optim.warmup_steps >= 0, "optim.warmup_steps", c.optim.warmup_steps, ">= 0")
  _require(c.optim.weight_decay >= 0, "optim.weight_decay", c.optim.weight_decay, ">= 0")
  from otcxr_jax.training import optim  # light import: optax only
  _require(c.optim.name in optim.OPTIMIZERS, "optim.name", c.optim.name,
           f"one of {optim.OPTIMIZERS}")
  _validate_parts(c)


def _validate_parts(c: ml_collections.ConfigDict) -> None:
  """Field-level checks owned by the augmentation and objective modules."""
  from otcxr_jax.data import augment
  from otcxr_jax.objectives import otcxr
  try:
    augment_config(c).validate()
  except ValueError as e:
    raise ConfigError(f"config.augment: {e}") from None
  _require(c.objective.name == "otcxr", "objective.name", c.objective.name, "'otcxr'")
  try:
    objective_config(c).validate()
  except ValueError as e:
    raise ConfigError(f"config.objective: {e}") from None
  del augment, otcxr


def augment_config(c: ml_collections.ConfigDict):
  from otcxr_jax.data import augment
  fields = dict(c.augment)
  fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in fields.items()}
  return augment.AugmentConfig(out_size=c.data.image_size, **fields)


def objective_config(c: ml_collections.ConfigDict):
  from otcxr_jax.objectives import otcxr
  fields = {k: v for k, v in c.objective.items() if k != "name"}
  return otcxr.OTCXRObjectiveConfig(**fields)
