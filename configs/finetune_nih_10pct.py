"""Fine-tuning on 10% of the NIH ChestX-ray14 training labels (paper: mean AUC 0.776).

    python -m otcxr_jax.main --config configs/finetune_nih_10pct.py \
        --workdir workdirs/finetune_nih_10pct \
        --config.finetune.checkpoint_dir=workdirs/pretrain_nih/checkpoints/pretrain

Needs `nih_chest_xray14/224` built (configs/build_nih_chest_xray14.py) and an OTCXR pretraining
run of the same `model.*` (ResNet-50, ImageNet stem, one channel); `finetune.init=random` gives the
random-init floor. The paper gives no fine-tuning recipe; these are our choices:

* ResNet-50 on 224x224 images, a linear head on the global-average-pooled features;
* nested, patient-level 10% of the training patients (`train_10pct`, about 7,500 images);
* AdamW, batch 64, peak learning rates 1e-4 for the pretrained encoder and 1e-3 for the new head
  (the head starts from scratch), decoupled weight decay 1e-2 on weight matrices, linear warm-up
  over 5% of the steps, then cosine decay to 0;
* 6,000 steps (about 50 epochs); validation mean AUC every 300 steps (about 2.5 epochs), early
  stopping after 5 evaluations without improvement; the best state is tested once;
* training views: random resized crop of 70-100% of the image area (aspect 3/4-4/3), rotation
  within ±5°, no flip (laterality matters) and no photometric change; evaluation: whole image.
"""

from otcxr_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.mode = "finetune"
  c.data.name = "nih_chest_xray14"
  c.data.config = "224"
  c.data.image_size = 224
  c.data.num_threads = 8

  c.model.encoder = "resnet50"
  c.model.stem = "imagenet"

  f = c.finetune
  f.split = "train_10pct"
  f.init = "pretrained"
  f.checkpoint_dir = "workdirs/pretrain_nih/checkpoints/pretrain"
  f.batch_size = 64
  f.num_steps = 6000
  f.optimizer = "adamw"
  f.encoder_learning_rate = 1e-4
  f.head_learning_rate = 1e-3
  f.weight_decay = 1e-2
  f.warmup_steps = 300
  f.eval_every = 300
  f.patience = 5
  f.crop_scale = (0.7, 1.0)
  f.rotation_deg = 5.0

  c.train.log_every = 50
  c.train.checkpoint_every = 500
  return c
