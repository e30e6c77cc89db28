"""Fine-tuning on 10% of the NIH ChestX-ray14 training labels (paper: mean AUC 0.776).

    python -m otcxr_jax.main --config configs/finetune_nih_10pct.py \
        --workdir workdirs/finetune_nih_10pct \
        --config.finetune.checkpoint_dir=workdirs/pretrain_nih/checkpoints/pretrain

Needs `nih_chest_xray14/224` built (configs/build_nih_chest_xray14.py) and an OTCXR pretraining
run of the same `model.*` (ResNet-50, ImageNet stem, one channel); `finetune.init=random` gives the
random-init floor. The paper gives no fine-tuning recipe beyond common chest X-ray SSL practice
(end-to-end fine-tuning for tens of epochs, the model selected on validation); the protocol is
modes/finetune.py's LP-FT with config_lib's defaults:

* ResNet-50 on 224x224 images; a linear head on the global-average-pooled features, standardised
  with the fixed mean and standard deviation of the training images' features under the
  pretrained encoder;
* nested, patient-level 10% of the training patients (`train_10pct`, about 7,500 images, 117
  steps of 64 per epoch);
* stage 1, linear probe: the head alone on the frozen features for 100 epochs (AdamW, batch 256,
  learning rate `probe.learning_rate`), weight decay of `probe.weight_decays` chosen on
  validation;
* stage 2, the whole network from that head: AdamW, batch 64, peak learning rates 1e-5 (encoder)
  and 1e-4 (head), decoupled weight decay 1e-2 on weight matrices, one warm-up epoch, cosine
  decay to 0 over 50 epochs; validation mean AUC at the start and after every epoch, early
  stopping after 10 evaluations without improvement; the best state is tested once;
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

  c.finetune.split = "train_10pct"
  c.finetune.checkpoint_dir = "workdirs/pretrain_nih/checkpoints/pretrain"

  c.train.log_every = 50
  c.train.checkpoint_every = 500
  return c
