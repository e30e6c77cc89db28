"""The synthetic demo: OTCXR on 64x64 synthetic chest X-rays, in minutes on a laptop CPU.

    python -m otcxr_jax.main --config configs/demo.py --workdir workdirs/demo

Builds `synthetic_cxr/64_p10000` if absent (10,000 patients, about 25,000 images: a test split of
2,470 images puts the mean AUC's 95% interval near +-0.014), pretrains a half-width ResNet-18
(ImageNet stem, three stages: a 4x4 dense map at 64x64) with OTCXR's dense terms and an
image-level BYOL term beside them (150 steps of batch 128), linear-probes its dense map against
the same encoder at random init and raw pixels on the labels of half the training images, and
writes workdirs/demo/report.md. The choices below are measured in
docs/results.md ("Making the demo's pretraining learn the image" and the sections after it).

Two parts of the objective are not in the paper: the image-level term, and the variance/covariance
taken at each cell. At this scale the term carries the gain: without both
(`--config.objective.global_weight=0 --config.objective.teacher_tau=0
--config.objective.varcov_per_position=False`, the paper's objective) the dense map probes at
about random init's level; the term alone (`--config.objective.alpha=0 --config.objective.beta=0
--config.objective.eta=0`) probes as high as the whole objective, and with the variance/covariance
pooled over the cells and the term at half this weight the dense terms cost 0.017 of it
(docs/results.md, "The demo's objective, three seeds").
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.mode = "demo"

  c.data.config = "64"
  c.data.image_size = 64
  c.data.synthetic_patients = 10000

  # Mild photometric jitter: wider jitter (the films' own spread of window, gamma and noise)
  # costs the pooled probe 0.01-0.03 (docs/results.md); no blur (nodules are 2-3 px at 64x64).
  c.augment.crop_scale = (0.5, 1.0)
  c.augment.brightness = 0.05
  c.augment.contrast = 0.1
  c.augment.gamma = (0.9, 1.1)
  c.augment.noise_std = (0.0, 0.01)
  c.augment.blur_prob = 0.0

  c.model.encoder = "resnet18"
  # Half width (128 channels at the last stage): its random init is a stronger floor too, but
  # pretraining gains more over it than at quarter width (docs/results.md).
  c.model.width = 0.5
  # The ImageNet stem (7x7/2 + max-pool, the default) and three stages: a 4x4 map at 64x64 whose
  # every layer the dense loss trains, 2.5x faster than the small stem of stride 2 with four stages.
  c.model.num_stages = 3
  # GroupNorm: no batch statistics, so the random-init baseline is the same function in training
  # and evaluation (with BatchNorm, eval at init skips normalisation altogether; docs/results.md).
  c.model.norm = "group"
  c.model.norm_groups = 8
  c.model.projector_hidden = 512
  c.model.projector_dim = 128

  c.objective.num_iters = 30
  c.objective.location_weight = 0.2
  # Without it the projected tokens become a code of the grid cell alone (docs/results.md).
  c.objective.center_positions = True
  # BYOL's image-level branch (predictor, EMA teacher): the dense terms alone leave the pooled
  # features nearly the same for every image (docs/results.md).
  c.objective.global_weight = 100.0
  # The teacher's decay starts at 0.98 (BYOL's 0.996 is for long runs: over the demo's 150 steps
  # its teacher would stay near its random start).
  c.objective.teacher_tau = 0.98
  # Variance/covariance over the batch at each cell, as VICRegL does for local features (not in
  # the paper, which pools batch x positions): pooled, the cells' differences within one image
  # meet the variance term without any image varying (docs/results.md).
  c.objective.varcov_per_position = True

  c.optim.name = "adamw"
  c.optim.base_learning_rate = 4e-3    # peak 2e-3 at batch 128
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 15

  c.train.batch_size = 128
  c.train.num_steps = 150
  c.train.log_every = 25
  c.train.checkpoint_every = 50

  c.probe.num_steps = 600
  # The labels of half the training images (pretraining reads all of them): extracting features of
  # the other half for two encoders would take a sixth of the demo's time.
  c.probe.train_examples = 10000
  # The dense map, flattened (4x4 cells x 128 channels): the findings are local and the pooled
  # features average them away, for every encoder alike (docs/results.md).
  c.probe.readout = "map"
  return c
