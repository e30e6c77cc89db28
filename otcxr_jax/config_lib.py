"""The configuration schema: every field with its default, and validation before any compute.

Experiment files in ``configs/`` start from :func:`base_config` and override fields. The config is
locked by ``config_flags``, so a misspelt field (in a file or on the command line) is refused;
:func:`validate` then checks values and cross-field constraints, naming the field and what was
expected, before any data is read or any array is allocated.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import ml_collections
from ml_collections import config_dict

from otcxr_jax import errors, models
from otcxr_jax.models import factory, resnet
from otcxr_jax.objectives import registry as objective_registry

PROBE_INITS = ("pretrained", "random")
# probe.init of mode linear_probe only: the raw-pixel floor (images downsampled to
# probe.pixel_floor_size), probed like an encoder's features
PIXEL_FLOOR = "pixels"
# What a frozen-feature evaluation reads of the encoder (evaluation/features.feature_fn).
PROBE_READOUTS = ("pooled", "map")
FINETUNE_SPLITS = ("train_1pct", "train_10pct", "train")  # nested label fractions 1%, 10%, 100%
# Pretraining methods, OTCXR first (objectives/registry.OBJECTIVES), and the config section of
# each one's hyperparameters: config.<method>, but OTCXR's is config.objective.
METHODS = tuple(objective_registry.OBJECTIVES)
METHOD_SECTIONS = {method: method for method in METHODS} | {"otcxr": "objective"}
ENCODERS = tuple(models.ENCODERS)
COMPUTE_DTYPES = tuple(factory.COMPUTE_DTYPES)


class ConfigError(errors.UserError, ValueError):
  """A config field has a value the run cannot use."""


def _data() -> dict:
  """``config.data``: the dataset, where it is kept, its splits and the encoder's input side
  (``data/datasets.py``, ``data/pipeline.py``)."""
  return dict(
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
      build_processes=0,           # dataset builds' worker processes (0: one per core, <= 16)
  )


def _augment() -> dict:
  """``config.augment``: pretraining's on-device two-view augmentation
  (``data/augment.AugmentConfig``, which checks it)."""
  return dict(
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


def _model() -> dict:
  """``config.model``: the encoder, the projectors and CV-SIM (``models/factory.py``)."""
  return dict(
      encoder="resnet50",
      width=1.0,                   # ResNet channel multiplier
      stem="imagenet",             # 'imagenet' (7x7/2 + max-pool) or 'small' (3x3, no pool)
      stem_stride=1,               # the 'small' stem's stride; 'imagenet' has its own (4 with pool)
      num_stages=4,                # ResNet stages built (1-4); fewer end at a finer map
      last_stride=2,               # the last stage's stride: 2, or 1 for a map twice as fine
      norm="batch",                # ResNet normalisation: 'batch' or 'group' (GroupNorm)
      norm_groups=32,              # GroupNorm groups (gcd with each layer's channels)
      in_channels=1,
      dense_stage="dense",         # 'dense' = last stage; or a stage name such as 'stage3'
      projector_hidden=2048,
      projector_dim=512,
      projector_layers=2,
      cvsim=True,
      cvsim_heads=4,
      cvsim_mlp_ratio=2.0,
  )


def _objective() -> dict:
  """``config.objective``: OTCXR's hyperparameters (method 'otcxr';
  ``objectives/otcxr.OTCXRObjectiveConfig``, which checks them)."""
  return dict(
      alpha=50.0,                  # weight of L_OT
      beta=12.5,                   # weight of each view's variance term
      eta=1.0,                     # weight of each view's covariance term
      epsilon=0.05,                # entropic regularisation (absolute, cost in [0, 2])
      num_iters=50,                # fixed Sinkhorn iterations
      cost="cosine",
      lse_mode=config_dict.placeholder(bool),  # None: kernel mode where it is safe
      grad_mode="fixed",
      center_tokens=True,          # OT cost on per-image centred tokens (see objectives/otcxr.py)
      center_positions=False,      # OT cost without the batch's mean token at each position
      location_weight=0.0,         # λ of the crop-geometry location prior in the OT cost
      varcov_per_position=False,   # var/cov over the batch at each position, then averaged
      alignment="ot",              # 'ot', or ablation 'location_mse' (objectives/location_match.py)
      global_weight=0.0,           # γ of an image-level VICReg term on mean tokens (0: the paper)
      teacher_tau=0.0,             # >0: the image-level term is BYOL's (predictor, EMA teacher
                                   # whose decay starts here, cosine to 1); 0: VICReg's
  )


# Baselines (objectives/<method>.py; defaults are each paper's). Every method reads the encoder
# and the projector sizes from config.model (pooled features -> projector; BYOL's predictor
# has the projector's architecture, VICRegL's local projector too).
def _simclr() -> dict:
  """``config.simclr``: SimCLR's hyperparameters (``objectives/simclr.SimCLRConfig``)."""
  return dict(temperature=0.1)


def _byol() -> dict:
  """``config.byol``: BYOL's target schedule (``objectives/byol.BYOLConfig``)."""
  return dict(base_tau=0.996)    # EMA decay of the target network at step 0, cosine to 1


def _barlow_twins() -> dict:
  """``config.barlow_twins``: Barlow Twins' hyperparameters
  (``objectives/barlow_twins.BarlowTwinsConfig``)."""
  return dict(lambda_offdiag=5e-3, eps=1e-5)


def _vicreg() -> dict:
  """``config.vicreg``: VICReg's hyperparameters (``objectives/vicreg.VICRegConfig``)."""
  return dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, gamma=1.0, eps=1e-4)


def _vicregl() -> dict:
  """``config.vicregl``: VICRegL's hyperparameters (``objectives/vicregl.VICRegLConfig``)."""
  return dict(
      alpha=0.75, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, gamma=1.0, eps=1e-4,
      num_matches=(20, 4),         # location matches s->t, t->s (at most the dense map's cells)
      num_feature_matches=config_dict.placeholder(tuple),  # None: every cell
  )


def _optim() -> dict:
  """``config.optim``: pretraining's optimiser and its schedule (``training/optim.py``)."""
  return dict(
      name="lars",
      base_learning_rate=0.2,      # peak lr = base * batch / 256
      weight_decay=1e-6,
      momentum=0.9,
      b1=0.9,
      b2=0.999,
      warmup_steps=1000,
      grad_clip_norm=0.0,
  )


def _train() -> dict:
  """``config.train``: pretraining's loop (``training/loop.LoopConfig``) and activations' dtype."""
  return dict(
      batch_size=256,              # global, over all devices and processes
      num_steps=100_000,
      log_every=50,
      checkpoint_every=1000,
      keep_checkpoints=2,
      compute_dtype="float32",     # 'bfloat16': bf16 activations, fp32 parameters
      tensorboard=True,
      on_nonfinite="stop",         # non-finite loss/gradient: 'stop' (raise) or 'skip' the update
  )


def _probe() -> dict:
  """``config.probe``: linear probes on frozen features and the encoder they read (modes
  ``linear_probe``, ``knn``, ``segment``, the demo, and fine-tuning's linear-probe stage)."""
  return dict(
      batch_size=256,              # feature extraction and probe training
      num_steps=1000,
      learning_rate=3e-2,
      weight_decays=(1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0),  # L2 strengths of the probe
                                   # (penalised_bce in evaluation/linear_probe.py), trained side
                                   # by side and chosen on validation mean AUC
      pixel_floor_size=16,         # raw-pixel floor: images downsampled to this side
      train_examples=0,            # linear probe and demo: labelled training images the probe
                                   # reads, a fixed random subset of data.train_split (0 = all)
      init="pretrained",           # linear_probe/knn encoder: 'pretrained' or 'random';
                                   # linear_probe also 'pixels' (the raw-pixel floor)
      readout="pooled",            # linear probe and demo features: 'pooled' (global average
                                   # pool) or 'map' (the dense map, flattened: keeps where)
      whiten=True,                 # linear probe and demo: whiten the features (principal axes at
                                   # unit variance) or only standardise them (False)
      checkpoint_dir="",           # '' = <workdir>/checkpoints/pretrain
  )


def _knn() -> dict:
  """``config.knn``: mode ``knn``'s weighted kNN vote (``modes/knn.py``)."""
  return dict(
      k=20,                        # neighbours voting (weighted kNN, Wu et al. 2018; DINO's k)
      temperature=0.07,            # T of the vote weights exp(cosine / T); the cosine of
                                   # features centred on the bank's (training split's) mean
      whiten=True,                 # whiten the features with the bank's statistics first
  )


def _segment() -> dict:
  """``config.segment``: mode ``segment`` (``modes/segment.py``); its encoder comes from
  ``probe.init``."""
  return dict(
      split="train",               # training split ('train_10pct' etc. for a label fraction)
      batch_size=16,               # global, also the evaluation batch
      num_steps=10_000,
      encoder_learning_rate=1e-4,  # AdamW peaks (absolute, not scaled by the batch size)
      decoder_learning_rate=1e-3,
      weight_decay=1e-4,
      warmup_steps=500,
      dice_weight=1.0,             # loss = BCE + dice_weight * soft Dice
      threshold=0.5,               # a pixel is predicted positive where sigmoid(logit) > threshold
      eval_every=500,              # validation Dice every this many steps
      patience=5,                  # evaluations without improvement before stopping; 0 = never
      selection_metric="dice_all", # validation 'dice_all' (every image) or 'dice_positive'
      decoder_channels=(256, 128, 64, 32, 16),  # per decoder level, deepest first
      crop_scale=(0.7, 1.0),       # training augmentation: crop area fraction,
      rotation_deg=5.0,            # rotation range, brightness and contrast jitter
      brightness=0.1,
      contrast=0.1,
  )


# Fine-tuning (modes/finetune.py), LP-FT: the head on frozen standardised features (stage 1),
# then the whole network from it (stage 2). Epochs are passes over `split`; each *_steps /
# eval_every field, when set (not None), replaces its epoch field.
def _finetune() -> dict:
  """``config.finetune``: mode ``finetune`` (``modes/finetune.py``)."""
  return dict(
      split="train_10pct",         # label fraction: one of FINETUNE_SPLITS
      init="pretrained",           # encoder start: 'pretrained' (checkpoint_dir) or 'random'
      checkpoint_dir="",           # any run's checkpoint directory holding an encoder
      batch_size=64,               # stage-2 training and evaluation batch (global)
      linear_probe_epochs=100.0,   # stage 1 (probe.batch_size, probe.learning_rate, weight decay
                                   # of probe.weight_decays chosen on validation), at least
                                   # probe.num_steps steps; 0 = skip
      num_epochs=50.0,             # stage 2, rounded to whole validation intervals
      num_steps=config_dict.placeholder(int),     # stage 2 in steps instead of num_epochs
      optimizer="adamw",           # one of training/optim.OPTIMIZERS
      encoder_learning_rate=1e-5,  # peak learning rates (warm-up, then cosine decay to 0)
      head_learning_rate=1e-4,
      weight_decay=1e-2,           # on weight matrices only
      warmup_epochs=1.0,
      warmup_steps=config_dict.placeholder(int),  # instead of warmup_epochs
      eval_every_epochs=1.0,       # validation mean AUC (selection, curves) every this many epochs
      eval_every=config_dict.placeholder(int),    # in stage-2 steps instead (divides num_steps)
      patience=10,                 # evaluations without improvement before stopping; 0 = never
      track_feature_mean=True,     # stage 2: the head centres each batch on its own mean and
                                   # tracks it (models.LinearClassifier track_mean); False: fixed
      whitened_head=True,          # stage 2 keeps stage 1's whitening as a fixed projection in
                                   # the head (probe.whiten); False: folded into its weights
      crop_scale=(0.7, 1.0),       # training view: random resized crop of this area fraction,
      rotation_deg=5.0,            # rotated by U(-rotation_deg, rotation_deg); no photometric
  )


def _localize() -> dict:
  """``config.localize``: mode ``localize`` (``modes/localize.py``): heatmaps against boxes."""
  return dict(
      methods=("cam", "attention", "transport"),  # of evaluation/localization.METHODS
      classifier_workdir="",       # 'cam': the fine-tuning run whose classifier is explained
      init="pretrained",           # 'attention'/'transport': pretraining network, or 'random' init
      checkpoint_dir="",           # its checkpoints ('' = <workdir>/checkpoints/pretrain)
      num_references=8,            # 'transport': normal training images the image is matched to
      threshold_mode="fraction_of_max",  # IoU region: 'fraction_of_max' or 'top_fraction'
      threshold=0.5,               # in (0, 1]: of the min-max normalised map, or of the pixels
      batch_size=32,
      num_examples=8,              # instances drawn in localize_examples.png
  )


def _report() -> dict:
  """``config.report``: the demo's report and mode ``report`` (``modes/report.py``)."""
  return dict(
      num_correspondences=12,      # strongest transport-plan matches drawn
      workdirs=(),                 # mode 'report': evaluation workdirs collected into report.md
  )


def _distributed() -> dict:
  """``config.distributed``: multi-process runs (``training/distributed.py``)."""
  return dict(
      coordinator_address="",      # 'host:port' of process 0; '' = env / cluster detection
      num_processes=0,             # 0 = env / cluster detection; 1 = single process
      process_id=-1,               # -1 = env / cluster detection
  )


# Each section of the config and the function giving its defaults, in the config's order.
_SECTIONS = {
    "data": _data,
    "augment": _augment,
    "model": _model,
    "objective": _objective,
    "simclr": _simclr,
    "byol": _byol,
    "barlow_twins": _barlow_twins,
    "vicreg": _vicreg,
    "vicregl": _vicregl,
    "optim": _optim,
    "train": _train,
    "probe": _probe,
    "knn": _knn,
    "segment": _segment,
    "finetune": _finetune,
    "localize": _localize,
    "report": _report,
    "distributed": _distributed,
}


def base_config() -> ml_collections.ConfigDict:
  """Every field a run reads, with the documented defaults (paper-scale pretraining): the
  top-level fields, then each section from its function in :data:`_SECTIONS`."""
  c = ml_collections.ConfigDict()
  c.mode = "pretrain"
  c.seed = 0
  c.method = "otcxr"               # pretraining method: one of METHODS
  # A rerun of a workdir with another config than it was started with is refused unless this is
  # True: then the change is accepted and recorded (training/workdir.py).
  c.allow_config_change = False
  for name, defaults in _SECTIONS.items():
    c[name] = defaults()
  return c


def require(ok: bool, field: str, value: Any, expected: str) -> None:
  """Raises :class:`ConfigError` ``config.<field>=<value>: expected <expected>`` unless ``ok``."""
  if not ok:
    raise ConfigError(f"config.{field}={value!r}: expected {expected}.")


def positive(c, fields: Iterable[str]) -> None:
  """Requires each dotted field of ``c`` to be a positive number."""
  for f in fields:
    v = _get(c, f)
    require(isinstance(v, (int, float)) and v > 0, f, v, "a positive number")


def _either(names: Iterable[str]) -> str:
  """``"'a' or 'b'"``: what a field of one of ``names`` expects."""
  return " or ".join(map(repr, names))


def _get(c, dotted: str):
  node = c
  for part in dotted.split("."):
    node = node[part]
  return node


def _built_stages(model: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The stage names of ``config.model``'s network (a ViT has no stages)."""
  if not model.encoder.startswith("resnet"):
    return ()
  return ("stem",) + tuple(f"stage{i}" for i in range(1, model.num_stages + 1))


def check_overrides(c: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Refuses command-line overrides (``{'model.stem_stride': 2, ...}``) that combine fields the
  run would not use together: a ``model.stem_stride`` other than 1 given for the 'imagenet'
  stem (a config file's stride for its 'small' stem is not an error: it does not apply)."""
  if "model.stem_stride" in overrides and c.model.stem != "small" and c.model.stem_stride != 1:
    raise ConfigError(f"config.model.stem_stride={c.model.stem_stride!r} applies to "
                      f"model.stem='small' only; model.stem={c.model.stem!r} has a fixed stride. "
                      "Drop the stride, or set --config.model.stem=small.")


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` naming the first invalid field of the shared sections; each mode
  checks its own section (``otcxr_jax.modes.validate`` runs both)."""
  _validate_distributed(c)
  require(isinstance(c.data.build_processes, int) and not isinstance(c.data.build_processes, bool)
          and c.data.build_processes >= 0, "data.build_processes", c.data.build_processes,
          "a non-negative int (0: one worker process per core, at most 16)")
  if c.mode == "build_dataset":
    require(bool(c.data.name), "data.name", c.data.name, "a dataset name")
    return
  require(c.model.encoder in ENCODERS, "model.encoder", c.model.encoder, f"one of {ENCODERS}")
  require(c.model.stem in resnet.STEMS, "model.stem", c.model.stem, _either(resnet.STEMS))
  require(isinstance(c.model.stem_stride, int) and c.model.stem_stride >= 1, "model.stem_stride",
          c.model.stem_stride, "a positive int")
  require(c.model.last_stride in (1, 2) and not isinstance(c.model.last_stride, bool),
          "model.last_stride", c.model.last_stride, "1 or 2 (the last ResNet stage's stride)")
  require(c.model.num_stages in (1, 2, 3, 4) and not isinstance(c.model.num_stages, bool),
          "model.num_stages", c.model.num_stages, "1, 2, 3 or 4 (ResNet stages)")
  require(not c.model.encoder.startswith("resnet") or c.model.dense_stage == "dense"
          or c.model.dense_stage in _built_stages(c.model),
          "model.dense_stage", c.model.dense_stage,
          f"'dense' or a built stage {_built_stages(c.model)}")
  require(c.model.in_channels in (1, 3), "model.in_channels", c.model.in_channels, "1 or 3")
  require(c.model.norm in resnet.NORMS, "model.norm", c.model.norm, _either(resnet.NORMS))
  require(isinstance(c.model.norm_groups, int) and c.model.norm_groups >= 1, "model.norm_groups",
          c.model.norm_groups, "a positive int")
  require(c.train.compute_dtype in COMPUTE_DTYPES, "train.compute_dtype", c.train.compute_dtype,
          f"one of {COMPUTE_DTYPES}")
  from otcxr_jax.training import loop  # the policies LoopConfig accepts
  require(c.train.on_nonfinite in loop.NONFINITE_POLICIES, "train.on_nonfinite",
          c.train.on_nonfinite, f"one of {loop.NONFINITE_POLICIES}")
  positive(c, ["data.image_size", "model.width", "model.projector_hidden", "model.projector_dim",
               "model.projector_layers", "model.cvsim_heads", "train.batch_size",
               "train.num_steps", "train.log_every", "optim.base_learning_rate",
               "probe.batch_size", "probe.num_steps", "probe.learning_rate"])
  pixels_here = c.probe.init == PIXEL_FLOOR and c.mode == "linear_probe"
  require(c.probe.init in PROBE_INITS or pixels_here, "probe.init", c.probe.init,
          f"one of {PROBE_INITS}" + (f" or {PIXEL_FLOOR!r}" if c.mode == "linear_probe" else
                                     f" ({PIXEL_FLOOR!r}, raw pixels, is for mode linear_probe)"))
  positive(c, ["probe.pixel_floor_size"])
  require(c.probe.readout in PROBE_READOUTS, "probe.readout", c.probe.readout,
          f"one of {PROBE_READOUTS}")
  require(isinstance(c.probe.whiten, bool), "probe.whiten", c.probe.whiten, "True or False")
  require(isinstance(c.probe.train_examples, int) and not isinstance(c.probe.train_examples, bool)
          and c.probe.train_examples >= 0, "probe.train_examples", c.probe.train_examples,
          "a non-negative int (0: every training image)")
  require(isinstance(c.knn.whiten, bool), "knn.whiten", c.knn.whiten, "True or False")
  require(isinstance(c.probe.checkpoint_dir, str), "probe.checkpoint_dir", c.probe.checkpoint_dir,
          "a directory path ('' for <workdir>/checkpoints/pretrain)")
  require(isinstance(c.knn.k, int) and not isinstance(c.knn.k, bool) and c.knn.k >= 1, "knn.k",
          c.knn.k, "a positive int")
  positive(c, ["knn.temperature"])
  require(c.model.encoder.startswith("resnet") or c.data.image_size % 16 == 0, "data.image_size",
          c.data.image_size, "a multiple of 16 for a ViT/16 encoder")
  require(c.model.projector_dim % c.model.cvsim_heads == 0 or not c.model.cvsim,
          "model.cvsim_heads", c.model.cvsim_heads,
          f"a divisor of model.projector_dim={c.model.projector_dim}")
  require(c.optim.warmup_steps >= 0, "optim.warmup_steps", c.optim.warmup_steps, ">= 0")
  require(c.optim.weight_decay >= 0, "optim.weight_decay", c.optim.weight_decay, ">= 0")
  from otcxr_jax.training import optim  # light import: optax only
  require(c.optim.name in optim.OPTIMIZERS, "optim.name", c.optim.name,
          f"one of {optim.OPTIMIZERS}")
  _validate_finetune(c)
  _validate_parts(c)


def _validate_distributed(c: ml_collections.ConfigDict) -> None:
  """The ``distributed`` fields (defaults mean: from the environment or the cluster)."""
  from otcxr_jax.training import distributed
  d = c.distributed
  if d.coordinator_address:
    try:
      distributed.check_address(d.coordinator_address, "config.distributed.coordinator_address")
    except ValueError as e:
      raise ConfigError(str(e)) from None
  for field, minimum in (("num_processes", 0), ("process_id", -1)):
    v = d[field]
    require(isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
            f"distributed.{field}", v, f"an int >= {minimum}")
  require(d.num_processes == 0 or d.process_id < d.num_processes, "distributed.process_id",
          d.process_id, f"below distributed.num_processes={d.num_processes}")


def _validate_parts(c: ml_collections.ConfigDict) -> None:
  """Field-level checks owned by the augmentation module and by each method's objective (every
  method's section, whichever runs), then the run's method's fields against the network's."""
  try:
    augment_config(c).validate()
  except ValueError as e:
    raise ConfigError(f"config.augment: {e}") from None
  require(c.method in METHODS, "method", c.method, f"one of {METHODS}")
  require(c.mode != "demo" or c.method == "otcxr", "method", c.method,
          "'otcxr' for mode 'demo' (its report draws transport plans)")
  for method in METHODS:
    try:
      method_config(c, method)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config.{METHOD_SECTIONS[method]}: {e}") from None
  check = _METHOD_CHECKS.get(c.method)
  if check is not None:
    check(c)


def _check_otcxr(c: ml_collections.ConfigDict) -> None:
  """OTCXR's dense map is the network's last: every term of its loss (the image-level one
  included, which reads the mean of the same dense tokens) starts from that map."""
  require(c.model.dense_stage == "dense", "model.dense_stage", c.model.dense_stage,
          "'dense' for OTCXR: every term of its loss reads that stage's map, so the layers after "
          "it get no gradient, and the pooled features every evaluation reads would come from "
          "them at their initialisation; end the network there instead (model.num_stages)")


def _check_vicregl(c: ml_collections.ConfigDict) -> None:
  """VICRegL's matches fit in the dense map (an abstract encoder gives its size)."""
  grid = factory.dense_grid(c)
  cells = grid[0] * grid[1]
  matches = tuple(c.vicregl.num_matches)
  require(max(matches) <= cells, "vicregl.num_matches", matches,
          f"at most the {cells} cells of the {grid[0]}x{grid[1]} dense map "
          f"(model.dense_stage={c.model.dense_stage!r} at data.image_size={c.data.image_size})")
  feature = c.vicregl.num_feature_matches
  require(feature is None or max(feature) <= cells, "vicregl.num_feature_matches", feature,
          f"None or at most the {cells} cells of the {grid[0]}x{grid[1]} dense map")


# Checks of a method's fields against the rest of the config, for the methods that have some.
_METHOD_CHECKS = {"otcxr": _check_otcxr, "vicregl": _check_vicregl}


def augment_config(c: ml_collections.ConfigDict):
  from otcxr_jax.data import augment
  fields = dict(c.augment)
  fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in fields.items()}
  return augment.AugmentConfig(out_size=c.data.image_size, **fields)


def objective_config(c: ml_collections.ConfigDict):
  from otcxr_jax.objectives import otcxr
  return otcxr.OTCXRObjectiveConfig(**c.objective)


def method_config(c: ml_collections.ConfigDict, method: str | None = None):
  """The validated hyperparameters of a pretraining method (default: ``c.method``) from its
  section ``config.<METHOD_SECTIONS[method]>``.

  An instance of the method's config class in ``objectives/registry.OBJECTIVES``; raises
  ValueError naming the first invalid field (TypeError for an unknown one).
  """
  method = c.method if method is None else method
  if method not in METHODS:
    raise ValueError(f"unknown pretraining method {method!r}; expected one of {METHODS}")
  hparams = objective_registry.OBJECTIVES[method].config(**c[METHOD_SECTIONS[method]])
  hparams.validate()
  return hparams


def _validate_finetune(c: ml_collections.ConfigDict) -> None:
  """The ``finetune`` fields; the start checkpoint is required only when that mode runs."""
  f = c.finetune
  require(f.split in FINETUNE_SPLITS, "finetune.split", f.split, f"one of {FINETUNE_SPLITS}")
  require(f.init in PROBE_INITS, "finetune.init", f.init, f"one of {PROBE_INITS}")
  require(isinstance(f.checkpoint_dir, str), "finetune.checkpoint_dir", f.checkpoint_dir,
          "a directory path")
  require(c.mode != "finetune" or f.init != "pretrained" or bool(f.checkpoint_dir),
          "finetune.checkpoint_dir", f.checkpoint_dir,
          "the checkpoint directory of the run to start from (e.g. <pretraining workdir>/"
          "checkpoints/pretrain) when finetune.init='pretrained'")
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  is_number = lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                         and abs(v) < float("inf"))
  for field, minimum in (("batch_size", 1), ("patience", 0)):
    require(is_int(f[field]) and f[field] >= minimum, f"finetune.{field}", f[field],
            f"an int >= {minimum}")
  for field, minimum in (("num_steps", 1), ("eval_every", 1), ("warmup_steps", 0)):
    require(f[field] is None or (is_int(f[field]) and f[field] >= minimum), f"finetune.{field}",
            f[field], f"None (from the epochs) or an int >= {minimum}")
  for field in ("num_epochs", "eval_every_epochs"):
    require(is_number(f[field]) and f[field] > 0, f"finetune.{field}", f[field],
            "a positive number of epochs")
  for field in ("linear_probe_epochs", "warmup_epochs"):
    require(is_number(f[field]) and f[field] >= 0, f"finetune.{field}", f[field],
            "a number of epochs >= 0")
  require(f.num_steps is None or f.eval_every is None or f.num_steps % f.eval_every == 0,
          "finetune.eval_every", f.eval_every,
          f"a divisor of finetune.num_steps={f.num_steps}, so that the final state is evaluated")
  if c.mode == "finetune" and f.linear_probe_epochs > 0:  # stage 1 trains the probe's heads
    wds = c.probe.weight_decays
    require(isinstance(wds, (tuple, list)) and len(wds) > 0
            and all(is_number(w) and w >= 0 for w in wds), "probe.weight_decays", wds,
            "a non-empty tuple of weight decays >= 0 (fine-tuning's linear-probe stage, "
            "finetune.linear_probe_epochs > 0, chooses one on validation)")
  positive(c, ["finetune.encoder_learning_rate", "finetune.head_learning_rate"])
  require(f.weight_decay >= 0, "finetune.weight_decay", f.weight_decay, ">= 0")
  for field in ("track_feature_mean", "whitened_head"):
    require(isinstance(f[field], bool), f"finetune.{field}", f[field], "True or False")
  from otcxr_jax.training import optim
  require(f.optimizer in optim.OPTIMIZERS, "finetune.optimizer", f.optimizer,
          f"one of {optim.OPTIMIZERS}")
  try:
    finetune_augment_config(c)
  except ValueError as e:
    raise ConfigError(f"config.finetune: {e}") from None


def finetune_augment_config(c: ml_collections.ConfigDict):
  """Fine-tuning's training view: a random resized crop (``finetune.crop_scale``) rotated by
  ``U(-finetune.rotation_deg, finetune.rotation_deg)``; no flip and no photometric change."""
  from otcxr_jax.data import augment
  f = c.finetune
  return augment.AugmentConfig(
      out_size=c.data.image_size, crop_scale=tuple(f.crop_scale), rotation_deg=f.rotation_deg,
      brightness=0.0, contrast=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_prob=0.0,
      hflip_prob=0.0)
