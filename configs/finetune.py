r"""Fine-tuning (LP-FT) of a pretrained encoder on a label fraction; selected on validation, tested
once.

    python -m otcxr_jax.main --config configs/finetune.py:dataset=synthetic  # after configs/demo.py
    python -m otcxr_jax.main --config configs/finetune.py:dataset=nih,fraction=1pct
    # the paper's mean AUC: nih,fraction=1pct 0.688; nih,fraction=10pct 0.776;
    # vinbig,fraction=10pct 0.895; rsna,fraction=10pct 0.823 (AUC)
    # supervised reference, from scratch: dataset=synthetic,supervised
    # random-init floor (the same network at its initialisation): --config.finetune.init=random

Arguments: ``dataset`` (synthetic, nih, vinbig, rsna); ``fraction`` of the training labels, the
nested patient-level label fractions ``1pct``, ``10pct`` (default) and ``100pct``
(``finetune.split`` ``train_1pct``, ``train_10pct``, ``train``); ``supervised``: the supervised
reference, trained from random initialisation on every label.

The encoder starts from the pretraining run ``finetune.checkpoint_dir`` names (``workdirs/demo``
for the synthetic dataset, ``workdirs/pretrain_nih``, configs/pretrain_nih.py, for the real ones),
rebuilt from its ``config.json``. The paper gives no fine-tuning recipe beyond common chest X-ray
SSL practice (end-to-end fine-tuning for tens of epochs, the model selected on validation); the
protocol is modes/finetune.py's LP-FT with config_lib's defaults:

* a linear head on the global-average-pooled features, standardised with the fixed mean and
  standard deviation of the training images' features under the pretrained encoder;
* stage 1, linear probe: the head alone on the frozen features, whitened as the frozen probe
  whitens them (``probe.whiten``), for 100 epochs and at least the frozen probe's 600 steps
  (100 epochs of the synthetic 1% split are 100 steps), Adam, batch 256, learning rate
  ``probe.learning_rate`` (3e-2), the L2 strength of ``probe.weight_decays`` in the objective
  (``evaluation/linear_probe.penalised_bce``) chosen on validation;
* stage 2, the whole network from that head: AdamW, batch 64, peak learning rates 1e-5 (encoder)
  and 1e-4 (head), decoupled weight decay 1e-2 on weight matrices, one warm-up epoch, cosine
  decay to 0 over 50 epochs; validation mean AUC at the start and after every epoch, early
  stopping after 10 evaluations without improvement; the best state is tested once. The head
  keeps stage 1's whitening as a fixed projection (``finetune.whitened_head``) and centres each
  training batch on its own mean, which it tracks for evaluation
  (``finetune.track_feature_mean``): on nearly collinear pretrained features a head folded back
  to the standardised features is ill-conditioned for the optimiser, and a shift of the mean that
  every image shares swings its logits;
* training views: random resized crop of 70-100% of the image area (aspect 3/4-4/3), rotation
  within ±5°, no flip (laterality matters) and no photometric change; evaluation: whole image.
  On the synthetic dataset, whose films already vary in position, zoom and rotation, the whole
  image instead: the crops and rotations cost the demo encoder's fine-tuning at 10% labels 0.035
  of validation mean AUC within one epoch (0.675 to 0.641), which fine-tuning on whole images
  does not (0.689 after 42 epochs); random init also ends higher without them (docs/results.md).

``fraction=1pct`` (NIH: about 750 images, 12 steps of 64 per epoch): 100 fine-tuning epochs, the
validation split (far larger than the training images) scored every 5 epochs, early stopping after
4 evaluations (20 epochs) without improvement. ``10pct``: NIH about 7,500 images (117 steps per
epoch), VinBig about 1,050 (16), RSNA about 1,900 (30), synthetic about 1,960 (31).

``supervised``: ``finetune.init='random'`` on every label (synthetic: about 20,000 images, 312
steps of 64 per epoch), the same LP-FT protocol (the linear-probe stage reads the random encoder's
features) but the encoder learns from scratch at the head's rate, 1e-3, as supervised training
does; up to 100 epochs, stopped after 10 evaluations without improvement (a 400-step run, 3.2
epochs, still improved at its last evaluation). It reads no run, so it states its network: the
pretraining config's (configs/demo.py, configs/pretrain_nih.py).
"""

from configs import common

VARIANTS = ("dataset=synthetic", "dataset=nih,fraction=1pct", "dataset=nih,fraction=10pct",
            "dataset=vinbig,fraction=10pct", "dataset=rsna,fraction=10pct",
            "dataset=synthetic,supervised")
SPLITS = {"1pct": "train_1pct", "10pct": "train_10pct", "100pct": "train"}


def get_config(arg=None):
  arg = common.parse_arg(arg, "configs/finetune.py",
                         dataset=("synthetic", "nih", "vinbig", "rsna"),
                         fraction=(None, tuple(SPLITS)), supervised=False)
  fraction = arg.fraction or ("100pct" if arg.supervised else "10pct")
  c = common.evaluation_config("finetune", arg.dataset)
  f = c.finetune
  f.split = SPLITS[fraction]
  if fraction == "1pct":
    f.num_epochs = 100.0
    f.eval_every_epochs = 5.0
    f.patience = 4
  if arg.supervised:
    f.init = "random"
    common.state_network(c, common.pretraining_network(arg.dataset))
    f.num_epochs = 100.0
    f.encoder_learning_rate = 1e-3
    f.head_learning_rate = 1e-3
  else:
    f.checkpoint_dir = common.PRETRAINING[arg.dataset]
  if arg.dataset == "synthetic":
    f.crop_scale = (1.0, 1.0)  # whole films: the phantom varies their geometry itself
    f.rotation_deg = 0.0
    c.train.log_every = 25
    c.train.checkpoint_every = 100
  else:
    c.train.checkpoint_every = 500
  return c
