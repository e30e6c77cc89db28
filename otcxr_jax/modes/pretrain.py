"""Pretraining: OTCXR (two augmented views -> shared encoder -> projector -> CV-SIM -> OT loss), or
one of the baselines ``config.method`` names (each method's network, loss and target schedule in
``otcxr_jax/methods/``).

The network comes from ``methods.build_model``, the one place a pretraining network is built
from a config: the train loop and every evaluation that restores a pretraining checkpoint
(``training/checkpoint.restore_network``, from the run's ``config.json``) call it, so a
checkpoint of any method is read back into the same structure.
"""

from __future__ import annotations

import jax
import ml_collections
from etils import epath
from flax import nnx

from otcxr_jax import methods, models
from otcxr_jax.data import datasets
from otcxr_jax.data import pipeline
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import loop, optim
from otcxr_jax.training import workdir as workdir_lib
from otcxr_jax.training.distributed import print0

RUN_NAME = ckpt_lib.PRETRAIN_RUN_NAME


def loop_config(config: ml_collections.ConfigDict) -> loop.LoopConfig:
  t = config.train
  return loop.LoopConfig(num_steps=t.num_steps, log_every=t.log_every,
                         checkpoint_every=t.checkpoint_every, max_to_keep=t.keep_checkpoints,
                         tensorboard=t.tensorboard, on_nonfinite=t.on_nonfinite)


def save_config(config: ml_collections.ConfigDict, workdir) -> epath.Path:
  """Records the run's config next to its checkpoints (evaluations rebuild the model from it); a
  rerun is compared with it first (``training/workdir.py``). Returns the record's path."""
  return workdir_lib.save_config(config, workdir)


@workdir_lib.guarded
def run(config: ml_collections.ConfigDict, workdir: str) -> loop.LoopResult:
  save_config(config, workdir)
  source = datasets.split_source(config, config.data.train_split)
  batches = pipeline.train_iterator(
      source, global_batch_size=config.train.batch_size, seed=config.seed,
      transform=pipeline.select_keys(["image"]), process_index=jax.process_index(),
      process_count=jax.process_count(), num_threads=config.data.num_threads)
  tx, schedule = optim.pretraining_optimizer(config)
  model = methods.build_model(config, nnx.Rngs(config.seed))
  print0(f"[{RUN_NAME}] {config.method}, {config.model.encoder} "
         f"({models.count_params(model.encoder):,} encoder parameters), {len(source):,} training "
         f"images, batch {config.train.batch_size}, {config.train.num_steps} steps on "
         f"{jax.device_count()} device(s)")
  rng = jax.random.key_data(jax.random.key(config.seed + 1))
  return loop.run(name=RUN_NAME, workdir=workdir, model=model, loss_fn=methods.make_loss_fn(config),
                  tx=tx, batches=batches, global_batch_size=config.train.batch_size,
                  config=loop_config(config), rng=rng, schedule=schedule,
                  target_decay=methods.target_decay(config))
