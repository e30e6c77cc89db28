"""OTCXR pretraining on NIH ChestX-ray14, the paper's pretraining (encoder for every NIH, VinBig,
RSNA and SIIM-ACR number of the paper).

    python -m otcxr_jax.main --config configs/pretrain_nih.py --workdir workdirs/pretrain_nih

Needs `nih_chest_xray14/224` built (configs/build.py:dataset=nih). Only images are read: the
training split's labels are never used. The paper states the objective and the datasets, not the
schedule; our choices:

* ResNet-50 (torchvision layout, ImageNet stem, BatchNorm, one input channel) at 224x224 from
  random initialisation; the dense map is its last stage (7x7, 2048 channels), projected
  position-wise by a 2-layer MLP (2048 hidden) to 512 dimensions; CV-SIM with 4 heads both ways;
* objective: α = 50, β = 12.5, η = 1 (VICReg's 25/25/1 written for L_OT, see
  objectives/otcxr.py), cosine cost on per-image centred tokens, ε = 0.05, 50 Sinkhorn
  iterations, gradient through the cost with the plan fixed; the location prior of the crop
  geometry with λ = 0.2 (`objective.location_weight`), which the synthetic runs needed for the plan
  to follow anatomy rather than grid position (docs/results.md);
  `--config.objective.location_weight=0` is the paper's pure feature cost;
* augmentation: random resized crop of 25-100% of the area (aspect 3/4-4/3), rotation up to 10
  degrees, brightness/contrast 0.2, gamma 0.8-1.25, blur and noise with probability 0.5, no flip;
* LARS (MLVICX, the authors' predecessor, used LARS), base learning rate 0.2 x batch/256, weight
  decay 1e-6, 1,000 warm-up steps then cosine decay; batch 256;
* 90,000 steps: about 300 epochs (MLVICX's count) of the ~77,900 training images (the official
  train_val list minus a 10% validation split of its patients); fp32
  (`--config.train.compute_dtype=bfloat16` for bf16 activations on TPUs/GPUs).

The other paper-number configs (configs/linear_probe.py, finetune.py, segment.py and localize.py
with a real dataset) read this run, `workdirs/pretrain_nih`: its config.json gives them the
network. The ResNet-50, its projector and CV-SIM, LARS and batch 256 are config_lib's defaults.
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.data.name = "nih_chest_xray14"
  c.data.config = "224"
  c.data.image_size = 224
  c.data.num_threads = 8

  c.objective.location_weight = 0.2

  c.train.num_steps = 90_000
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  return c
