"""Supervised reference on the synthetic dataset: the demo's encoder trained from random
initialisation on every training label, to convergence.

    python -m otcxr_jax.main --config configs/finetune_synthetic_supervised.py \
        --workdir workdirs/finetune_synthetic_supervised

The fine-tuning mode (modes/finetune.py) with `finetune.init='random'` on `split='train'` (about
8,000 images, 125 steps of 64 per epoch): the same LP-FT protocol as configs/finetune_synthetic.py
(here the linear probe stage reads the random encoder's features), but the encoder learns from
scratch at the head's rate, 1e-3, as supervised training does. The budget is long enough for the
validation curve to flatten: up to 100 epochs, validation mean AUC every epoch, stopped after 10
evaluations without improvement, the best state tested. (A 400-step run, 3.2 epochs, still
improved at its last evaluation.)
"""

from configs import finetune_synthetic


def get_config():
  c = finetune_synthetic.get_config()
  f = c.finetune
  f.init = "random"
  f.checkpoint_dir = ""
  f.split = "train"
  f.num_epochs = 100.0
  f.encoder_learning_rate = 1e-3
  f.head_learning_rate = 1e-3
  return c
