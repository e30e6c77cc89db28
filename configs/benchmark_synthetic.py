r"""The synthetic benchmark: every pretraining method and OTCXR ablation at one budget, alike.

    python benchmarks/benchmark_synthetic.py --workdir workdirs/benchmark_synthetic
    python benchmarks/benchmark_synthetic.py --tiny --workdir workdirs/benchmark_synthetic_tiny

(``--tiny`` is ``--config configs/benchmark_synthetic.py:tiny``; ``--config
configs/benchmark_synthetic.py:gpu`` is the full-width encoder at about 20 epochs for one GPU; any
field can be overridden with ``--config.FIELD=VALUE``; see benchmarks/README.md for the runtime.)

Shared by every run: the demo's model and training (``configs/demo.py``, with the paper's objective
and the pooled probe: without the demo's image-level term and per-position variance/covariance,
which rows ``otcxr_image_byol`` and ``image_byol_only`` add, and its map readout: a half-width
GroupNorm ResNet-18 with the ImageNet stem and three stages, the demo's augmentations, projector sizes
512 -> 128, AdamW, cosine decay) on ``synthetic_cxr/128`` images of a cohort of
``SYNTHETIC_PATIENTS`` patients, at its own budget: 200 steps of batch 64 (peak learning rate 5e-4,
20 warm-up steps; the demo runs 150 of batch 128 at 2e-3). Each run is repeated
for ``benchmark.seeds`` seeds (0, 1, ...; the seed sets the initialisation, the data order and the
augmentations of pretraining and of the evaluations).

Why 128x128 and that cohort (docs/finding_contrast/, ``benchmarks/finding_contrast.py``):

- at 64x64 a nodule is 2-3 pixels across, so the detector blur and the pixel halve its peak
  contrast (0.52 of its 256x256 value; the thin pleural line of pneumothorax and the Kerley lines
  of edema about 0.6); at 128x128 every compact finding keeps 0.92-0.98 of its 256x256 peak and the
  nodule's contrast-to-noise ratio on a 3x3 window rises 2.5-fold (at 256x256 only 1.2-fold more).
  The sub-pixel lines keep gaining with size (0.72 and 0.67 at 128x128), but against the image
  noise (sd 1.0-1.6 grey levels) every finding is far above the Rose criterion at 128x128 (median
  whole-finding CNR 39-256, nodule and cardiomegaly);
- the dense map, and the localisation maps read from it (CAM, CV-SIM attention, transport), are
  8x8 (stride 16) instead of 4x4, against boxes of about 2% of the image;
- ``SYNTHETIC_PATIENTS`` patients give a patient-disjoint test split (10% of the patients) of
  2,470 images, where the 95% bootstrap interval of the mean AUC is ±0.0137 for per-class AUCs of
  0.75 (±0.0217 with the default 4,000 patients; 9,000, ±0.0139, is the smallest cohort measured
  within ±0.015, 10,000 leaves a margin for the split's composition). At per-class AUCs of 0.65
  it is ±0.0156.

This scale is meant for a GPU. On the 2-core CPU where the 64x64 version took 1 h 31 min, a
pretraining step ran at about 116 images/s at 64x64; four times the pixels make that about 30
images/s, about 7 minutes per pretraining run, and the 2.5-fold larger cohort lengthens every
evaluation that reads the whole training split (a pooled probe about 2 minutes, the dense-map
probe about 4): well over 8 hours in all. ``tiny`` stays at 32x32.

Evaluations: the linear probe of every row, of the pooled features (the paper's protocol) and of
the dense map flattened (8x8 cells x C channels: a linear readout that keeps where things are, the
demo's probe); kNN and the transfer evaluations (fine-tuning on 1%
and 10% of the labels, segmentation, each about as costly as a pretraining run, and localisation
of the test split's boxes: the pointing game of the 10% classifier's class activation maps, and
for OTCXR of its CV-SIM attention and transport maps, ``configs/localize.py:dataset=synthetic``)
of the rows of ``benchmark.evaluation_rows`` (OTCXR, VICReg and random init by default; set it to
``{}`` to evaluate every row). The probe, and fine-tuning's linear-probe stage, choose the weight
decay on validation from the shared grid (``probe.weight_decays``, 1e-4 to 3, whose heads train
side by side in one run: about the cost of one). Fine-tuning: the
LP-FT protocol of ``configs/finetune.py:dataset=synthetic`` (the head on frozen standardised
features, then the whole network), 30 epochs of stage 2 with selection on validation every epoch;
segmentation: ``configs/segment.py:dataset=synthetic`` at 300 steps. The supervised reference
trains from scratch with ``benchmark.supervised_fields``, the fields of
``configs/finetune.py:dataset=synthetic,supervised`` (up to 100 epochs, stopped when validation
has not improved for 10).

Runs (``benchmark_runs``: name -> the fields it changes; ``benchmark.runs`` picks and orders them):

====================  =========================================================================
run                   what changes
====================  =========================================================================
otcxr                 nothing: OTCXR as configured (OT alignment, CV-SIM, variance, covariance)
simclr                ``method='simclr'`` (NT-Xent, τ = 0.1)
byol                  ``method='byol'`` (predictor, EMA target, τ_base = 0.996)
barlow_twins          ``method='barlow_twins'`` (λ = 5e-3)
vicreg                ``method='vicreg'`` (25 / 25 / 1)
vicregl               ``method='vicregl'`` (α = 0.75, 26 + 5 location matches of the 64 cells)
otcxr_location_mse    OT replaced by the MSE of location-matched tokens
                      (``objective.alignment='location_mse'``, ``objective.alpha=25``: the MSE
                      is about twice the cosine cost, see objectives/location_match.py)
otcxr_no_cvsim        CV-SIM off (``model.cvsim=False``)
otcxr_no_variance     variance term off (``objective.beta=0``)
otcxr_no_covariance   covariance term off (``objective.eta=0``)
otcxr_epsilon_0p02    entropic ε = 0.02 (default 0.05)
otcxr_epsilon_0p2     entropic ε = 0.2
otcxr_iters_10        10 Sinkhorn iterations (default 30)
otcxr_iters_100       100 Sinkhorn iterations
otcxr_grad_unrolled   gradient through the unrolled Sinkhorn iterations
                      (``objective.grad_mode='unrolled'``; default 'fixed': through the cost,
                      plan held fixed)
otcxr_grad_implicit   implicit differentiation of the Sinkhorn fixed point
                      (``objective.grad_mode='implicit'``)
otcxr_image_byol      the demo's objective: an image-level BYOL term beside the dense terms,
                      whose variance/covariance are taken at each cell
                      (``objective.global_weight=100``, ``objective.teacher_tau=0.98``,
                      ``objective.varcov_per_position=True``)
image_byol_only       that term alone (``objective.alpha = beta = eta = 0``): what the dense
                      terms add to it
====================  =========================================================================

Reference rows (``benchmark.references``): ``random_init``, every evaluation of the encoder at
its initialisation (no pretraining); ``supervised``, fine-tuning from random initialisation on
100% of the training labels (supervised from scratch, column "fine-tune 100%"); ``raw_pixels``,
the linear probe of the images downsampled to ``probe.pixel_floor_size`` (16x16, the demo's
pixel floor; column "linear probe AUC" only).

Evaluations (``benchmark.evaluations``; each is the mode's ``run(config, workdir)``): test mean
AUC of ``linear_probe`` (pooled features), ``linear_probe_map`` (the dense map; not of
``raw_pixels``), ``knn``, ``finetune_1pct``, ``finetune_10pct``; test Dice of
``segment`` (all images and positive images); test pointing game of ``localize`` (chance: the
boxes' mean area fraction, about 0.02). The train step of every run of
``benchmark.timed_runs`` is timed in a fresh process (``benchmark.timing_steps`` steps on a
random batch after ``benchmark.timing_warmup``; peak memory from the device's statistics, or the
process's RSS high-water mark where the device reports none); the report gives OTCXR's overhead
over VICReg from the runs ``otcxr`` and ``vicreg``.
"""

import ml_collections
from ml_collections import config_dict

from configs import demo, finetune, segment

METHOD_RUNS = ("otcxr", "simclr", "byol", "barlow_twins", "vicreg", "vicregl")
#: Which part of OTCXR does the work: each component removed or replaced (run by default).
COMPONENT_ABLATIONS = ("otcxr_location_mse", "otcxr_no_cvsim", "otcxr_no_variance",
                       "otcxr_no_covariance")
#: The transport solver's settings (not run by default: add them to ``benchmark.runs``).
SOLVER_ABLATIONS = ("otcxr_epsilon_0p02", "otcxr_epsilon_0p2", "otcxr_iters_10",
                    "otcxr_iters_100", "otcxr_grad_unrolled", "otcxr_grad_implicit")
#: The demo's image-level BYOL term (not in the paper), with and without the dense terms (not run
#: by default: add them to ``benchmark.runs``).
IMAGE_LEVEL_RUNS = ("otcxr_image_byol", "image_byol_only")
ABLATION_RUNS = COMPONENT_ABLATIONS + SOLVER_ABLATIONS + IMAGE_LEVEL_RUNS
#: Rows of the transfer evaluations by default.
TRANSFER_ROWS = ("otcxr", "vicreg", "random_init")
#: Patients of the benchmark's cohort: a test split of about 2,500 images (module docstring).
SYNTHETIC_PATIENTS = 10000


#: What the demo's objective adds to the paper's (configs/demo.py): the image-level term and the
#: variance/covariance taken at each cell.
IMAGE_BYOL = {k: demo.get_config().objective[k]
              for k in ("global_weight", "teacher_tau", "varcov_per_position")}


def runs() -> dict:
  """Every run's fields, by name (also used by benchmarks/method_runtime.py on other configs)."""
  runs = {name: {} if name == "otcxr" else {"method": name} for name in METHOD_RUNS}
  runs.update(
      otcxr_location_mse={"objective": {"alignment": "location_mse", "alpha": 25.0}},
      otcxr_no_cvsim={"model": {"cvsim": False}},
      otcxr_no_variance={"objective": {"beta": 0.0}},
      otcxr_no_covariance={"objective": {"eta": 0.0}},
      otcxr_epsilon_0p02={"objective": {"epsilon": 0.02}},
      otcxr_epsilon_0p2={"objective": {"epsilon": 0.2}},
      otcxr_iters_10={"objective": {"num_iters": 10}},
      otcxr_iters_100={"objective": {"num_iters": 100}},
      otcxr_grad_unrolled={"objective": {"grad_mode": "unrolled"}},
      otcxr_grad_implicit={"objective": {"grad_mode": "implicit"}},
      otcxr_image_byol={"objective": dict(IMAGE_BYOL)},
      image_byol_only={"objective": {**IMAGE_BYOL, "alpha": 0.0, "beta": 0.0, "eta": 0.0}},
  )
  return runs


#: Training images of the benchmark's cohort (80% of its patients; the same at every resolution).
TRAIN_IMAGES = 19969


def get_config(scale: str | None = None) -> ml_collections.ConfigDict:
  """The benchmark config; ``scale='tiny'`` shrinks everything to run in about a minute, and
  ``scale='gpu'`` grows the encoder and the budget to a GPU's (``_gpu``)."""
  if scale not in (None, "", "default", "tiny", "gpu"):
    raise ValueError(f"configs/benchmark_synthetic.py: scale {scale!r}: expected 'tiny', 'gpu' "
                     "or none.")
  c = demo.get_config()
  c.mode = "pretrain"
  # The paper's objective and the pooled probe (module docstring).
  c.objective.global_weight = 0.0
  c.objective.teacher_tau = 0.0
  c.objective.varcov_per_position = False
  c.probe.readout = "pooled"
  c.probe.train_examples = 0  # every training image's labels (the demo's probes read 10,000)
  c.train.tensorboard = False  # the metric logs (<workdir>/metrics/*.jsonl) are kept
  c.data.config = "128"
  c.data.image_size = 128  # 8x8 dense map: the demo's ImageNet stem and three stages, stride 16
  c.data.synthetic_patients = SYNTHETIC_PATIENTS
  c.vicregl.num_matches = (26, 5)  # the reference's 20 and 4 of 49 cells, scaled to 64
  c.train.batch_size = 64
  c.train.num_steps = 200
  c.optim.base_learning_rate = 2e-3  # peak 5e-4 at batch 64 (the demo's is 4e-3)
  c.optim.warmup_steps = 20
  c.finetune = finetune.get_config("dataset=synthetic").finetune  # LP-FT, budgets in epochs
  c.finetune.num_epochs = 30.0
  c.segment = segment.get_config("dataset=synthetic").segment
  c.segment.num_steps = 300
  transfer = ("finetune_1pct", "finetune_10pct", "segment", "localize")
  c.benchmark = dict(
      seeds=3,
      runs=METHOD_RUNS + COMPONENT_ABLATIONS,
      references=("random_init", "supervised", "raw_pixels"),
      evaluations=("linear_probe", "linear_probe_map", "knn") + transfer,
      # {}: every evaluation on every row
      evaluation_rows={e: TRANSFER_ROWS for e in ("knn",) + transfer},
      # the supervised reference trains from scratch: the encoder at the head's rate, longer
      supervised_fields={"finetune": {
          k: finetune.get_config("dataset=synthetic,supervised").finetune[k]
          for k in ("num_epochs", "encoder_learning_rate", "head_learning_rate")}},
      timed_runs=config_dict.placeholder(tuple),  # None: every run of `runs`
      timing_steps=10,
      timing_warmup=2,
  )
  c.benchmark_runs = runs()
  if scale == "tiny":
    _tiny(c)
  elif scale == "gpu":
    _gpu(c)
  return c


def _gpu(c: ml_collections.ConfigDict) -> None:
  """A scale where the comparison means something, for one GPU: the full-width ResNet-18 (the
  demo's ImageNet stem, three stages and GroupNorm, 256 channels at the 8x8 map) pretrained for
  about 20 epochs (1,600 steps of batch 256 over the cohort's 19,969 training images) in bfloat16,
  the input pipeline with 16 reader threads; the evaluations as at the default scale. The step
  timings of the report are left out (``benchmarks/method_runtime.py`` measures them)."""
  c.model.width = 1.0
  c.train.batch_size = 256
  c.train.num_steps = 1600
  c.optim.warmup_steps = 160
  c.train.checkpoint_every = 400
  c.train.compute_dtype = "bfloat16"
  c.data.num_threads = 16
  c.benchmark.timed_runs = ()


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds per run: 32x32 images of 16 patients, an eighth-width ResNet-18, two steps."""
  c.data.config = "32"
  c.data.image_size = 32
  c.data.synthetic_patients = 16
  c.model.width = 0.125
  c.model.projector_hidden = 32
  c.model.projector_dim = 16
  c.model.cvsim_heads = 2
  c.objective.num_iters = 5
  c.vicregl.num_matches = (2, 1)  # of the 2x2 dense map's 4 cells
  c.optim.warmup_steps = 1
  c.train.batch_size = 8
  c.train.num_steps = 2
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.probe.batch_size = 8
  c.probe.num_steps = 4
  c.probe.weight_decays = (1e-3,)
  c.knn.k = 5
  f = c.finetune
  f.batch_size, f.num_steps, f.eval_every, f.warmup_steps, f.patience = 2, 2, 1, 0, 0
  s = c.segment
  s.batch_size, s.num_steps, s.eval_every, s.warmup_steps, s.patience = 4, 2, 1, 0, 0
  s.decoder_channels = (8, 8, 8, 8)
  s.selection_metric = "dice_all"  # the tiny validation split may hold no positive mask
  b = c.benchmark
  b.seeds = 1
  b.supervised_fields = {"finetune": {"encoder_learning_rate": 1e-3}}
  b.timing_steps = 2
  b.timing_warmup = 1
