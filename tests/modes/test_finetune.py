"""Fine-tuning (LP-FT): label fractions end to end, the feature statistics and the linear-probe
stage against independent computations, epoch budgets, per-submodule learning rates, validation
selection and curves, encoder starts from pretraining and fine-tuning checkpoints, and refused
inputs."""

import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.data import augment
from otcxr_jax.evaluation import classifier, metrics
from otcxr_jax.models import LinearClassifier
from otcxr_jax.modes import finetune
from otcxr_jax.training import optim
from tests.tiny import tiny_config

# A 300-patient cohort: train_1pct holds 3 patients (5 images), at least one batch of 4.
PATIENTS = 300




@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("finetune")


def _config(root, **finetune_fields):
  c = tiny_config(root / "tfds", mode="finetune")
  c.data.synthetic_patients = PATIENTS
  c.train.checkpoint_every = 100
  c.train.log_every = 2
  f = c.finetune
  f.init = "random"
  f.batch_size = 4
  f.num_steps = 4
  f.eval_every = 2
  f.warmup_steps = 1
  f.patience = 0
  f.linear_probe_epochs = 2.0
  for name, value in finetune_fields.items():
    f[name] = value
  config_lib.validate(c)
  return c


def _numpy_tree(state: nnx.State) -> dict[str, np.ndarray]:
  return {"/".join(map(str, path)): np.asarray(v.get_value())
          for path, v in nnx.to_flat_state(state)}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_encoder_and_head_learning_rates(root, optimizer):
  config = _config(root, optimizer=optimizer, encoder_learning_rate=0.1, head_learning_rate=0.02,
                   weight_decay=0.01, warmup_steps=0, num_steps=4, eval_every=4)
  model = classifier.build_classifier(config, num_classes=3)
  params = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(0)
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
  tx, schedules = finetune.make_optimizer(config, finetune.finetune_budget(config, 100))
  opt_state = tx.init(params)
  p, g = _numpy_tree(params), _numpy_tree(grads)
  lr = lambda path, step: {"encoder": 0.1, "head": 0.02}[path.split("/")[0]] * (
      0.5 * (1 + np.cos(np.pi * step / 4)))  # cosine decay over 4 steps, no warm-up
  assert schedules["encoder"](1) == pytest.approx(lr("encoder", 1))
  assert schedules["head"](1) == pytest.approx(lr("head", 1))
  trace = {k: np.zeros_like(v) for k, v in p.items()}
  for step in range(2):
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    got = _numpy_tree(updates)
    assert {k.split("/")[0] for k in got} == {"encoder", "head"}
    for k, pk in p.items():
      decay = 0.01 * pk if pk.ndim >= 2 else 0.0  # weight matrices only
      if optimizer == "sgd":  # heavy-ball momentum 0.9 on the decayed gradient
        trace[k] = g[k] + decay + 0.9 * trace[k]
        expected = -lr(k, step) * trace[k]
      elif step == 0:  # Adam's first step: m = g, v = g^2 after bias correction
        expected = -lr(k, step) * (g[k] / (np.abs(g[k]) + 1e-8) + decay)
      else:
        continue
      np.testing.assert_allclose(got[k], expected, rtol=2e-5, atol=1e-7, err_msg=k)
      p[k] = pk + got[k]


def test_per_submodule_needs_a_transform_for_every_submodule():
  params = {"encoder": {"w": np.ones(2)}, "head": {"w": np.ones(2)}}
  with pytest.raises(ValueError, match=r"parameters under 'head' have no optimiser"):
    optim.per_submodule({"encoder": optax.sgd(0.1)}).init(params)


@pytest.mark.parametrize("field,value,expected", [
    ("split", "train_5pct", "one of ('train_1pct', 'train_10pct', 'train')"),
    ("init", "imagenet", "one of ('pretrained', 'random')"),
    ("checkpoint_dir", "", "the checkpoint directory of the run to start from"),
    ("num_epochs", 0.0, "a positive number of epochs"),
    ("eval_every_epochs", float("inf"), "a positive number of epochs"),
    ("linear_probe_epochs", -1.0, "a number of epochs >= 0"),
    ("warmup_epochs", float("nan"), "a number of epochs >= 0"),
    ("num_steps", 0, "None (from the epochs) or an int >= 1"),
    ("eval_every", 0, "None (from the epochs) or an int >= 1"),
    ("warmup_steps", -1, "None (from the epochs) or an int >= 0"),
    ("patience", -1, "an int >= 0"),
    ("batch_size", 0, "an int >= 1"),
    ("head_learning_rate", 0.0, "a positive number"),
    ("weight_decay", -1e-4, ">= 0"),
    ("optimizer", "adam", "one of ('lars', 'adamw', 'sgd')"),
])
def test_validate_names_bad_finetune_fields(field, value, expected):
  c = config_lib.base_config()
  c.mode = "finetune"
  c.finetune.checkpoint_dir = "workdirs/pretrain/checkpoints/pretrain"
  config_lib.validate(c)
  c.finetune[field] = value
  with pytest.raises(config_lib.ConfigError,
                     match=re.escape(f"config.finetune.{field}={value!r}: expected {expected}")):
    config_lib.validate(c)


def test_validate_names_step_fields_that_do_not_fit():
  c = config_lib.base_config()
  c.mode = "finetune"
  c.finetune.checkpoint_dir = "workdirs/pretrain/checkpoints/pretrain"
  c.finetune.num_steps, c.finetune.eval_every = 6000, 7
  with pytest.raises(config_lib.ConfigError, match=re.escape(
      "config.finetune.eval_every=7: expected a divisor of finetune.num_steps=6000")):
    config_lib.validate(c)
  c.finetune.eval_every = None  # the interval then comes from eval_every_epochs
  config_lib.validate(c)
  c.probe.weight_decays = ()
  with pytest.raises(config_lib.ConfigError, match=r"config.probe.weight_decays=\(\): expected a "
                                                   r"non-empty tuple"):
    config_lib.validate(c)
  c.finetune.linear_probe_epochs = 0.0  # no linear-probe stage: no weight decay needed
  config_lib.validate(c)


def test_validate_names_bad_augmentation():
  c = config_lib.base_config()
  c.finetune.crop_scale = (0.0, 1.0)
  with pytest.raises(config_lib.ConfigError, match=r"config.finetune: AugmentConfig.crop_scale"):
    config_lib.validate(c)


@pytest.mark.parametrize("arg,dataset,split", [
    ("dataset=synthetic", "synthetic_cxr", "train_10pct"),
    ("dataset=nih,fraction=1pct", "nih_chest_xray14", "train_1pct"),
    ("dataset=nih,fraction=10pct", "nih_chest_xray14", "train_10pct"),
    ("dataset=vinbig,fraction=10pct", "vinbig_cxr", "train_10pct"),
    ("dataset=rsna,fraction=10pct", "rsna_pneumonia", "train_10pct"),
    ("dataset=synthetic,supervised", "synthetic_cxr", "train"),
])
def test_experiment_configs_validate(arg, dataset, split):
  c = importlib.import_module("configs.finetune").get_config(arg)
  config_lib.validate(c)
  assert (c.mode, c.data.name, c.finetune.split) == ("finetune", dataset, split)
  # Budgets in epochs, the LP-FT stages, selection with early stopping.
  f = c.finetune
  assert f.num_steps is None and f.eval_every is None and f.warmup_steps is None
  assert f.linear_probe_epochs > 0 and f.num_epochs >= 50 and f.patience > 0
  assert f.encoder_learning_rate <= f.head_learning_rate
  supervised = arg.endswith("supervised")
  assert f.init == ("random" if supervised else "pretrained")
  assert bool(f.checkpoint_dir) != supervised  # from scratch states its network instead
  if supervised:
    assert c.model.encoder == "resnet18"  # the demo's network, which the others read from its run
  if "synthetic" not in arg:
    assert (c.data.image_size, c.data.config) == (224, "224")


@pytest.mark.parametrize("arg", ["dataset=synthetic", "dataset=nih,fraction=1pct"])
def test_synthetic_fine_tuning_trains_on_whole_films_and_real_data_on_crops(arg):
  c = importlib.import_module("configs.finetune").get_config(arg)
  c.data.image_size = 32
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 40, 40, 1)), jnp.float32)
  aug = config_lib.finetune_augment_config(c)
  views = [augment.augment(jax.random.key(k), images, aug).image for k in range(3)]
  whole = augment.center_view(images, 32)  # what validation and test see
  if arg == "dataset=synthetic":
    for view in views:  # every training view is the evaluation view
      np.testing.assert_allclose(view, whole, atol=1e-5)
  else:  # random crops and rotations: views differ from it and from each other
    assert all(float(jnp.abs(view - whole).max()) > 0.05 for view in views)
    assert float(jnp.abs(views[0] - views[1]).max()) > 0.05


# Epoch budgets.

def test_budgets_convert_epochs_to_steps():
  c = config_lib.base_config()
  f = c.finetune
  f.batch_size, f.num_epochs, f.eval_every_epochs, f.warmup_epochs = 64, 3.0, 1.0, 1.0
  # 1000 images: 15.625 steps per epoch; validation every 16 steps; 3 epochs = 46.9 steps, 2.93
  # validation intervals -> 3 (48 steps); one warm-up epoch.
  b = finetune.finetune_budget(c, 1000)
  assert (b.steps_per_epoch, b.num_steps, b.eval_every, b.warmup_steps) == (15.625, 48, 16, 16)
  assert b.epochs(48) == pytest.approx(3.072)
  f.eval_every = 10
  assert finetune.finetune_budget(c, 1000).num_steps == 50
  # An interval rounded down does not add an interval: 19,969 images, 312.02 steps per epoch,
  # validation every 312; 10 epochs are 10 intervals (3,120 steps), not 11.
  f.num_epochs, f.eval_every = 10.0, None
  b = finetune.finetune_budget(c, 19969)
  assert (b.eval_every, b.num_steps) == (312, 3120)
  f.num_epochs = 3.0
  # Fixed steps: exactly num_steps, validated every largest divisor of it not above one epoch.
  f.num_steps, f.eval_every, f.warmup_steps = 150, None, 5
  b = finetune.finetune_budget(c, 1000)
  assert (b.num_steps, b.eval_every, b.warmup_steps) == (150, 15, 5)
  # Stage 1 at probe.batch_size (capped to the split, a multiple of the 4 test devices), for the
  # epochs asked when they are more steps than the frozen probe's own (here 1) ...
  c.probe.batch_size, c.probe.num_steps, f.linear_probe_epochs = 256, 1, 10.0
  b = finetune.linear_probe_budget(c, 1000)
  assert (b.batch_size, b.eval_every, b.num_steps, b.warmup_steps) == (256, 4, 40, 2)
  b = finetune.linear_probe_budget(c, 50)
  assert (b.batch_size, b.eval_every, b.num_steps) == (48, 1, 10)  # 10 epochs of 1.04 steps
  # ... and at least the frozen probe's own steps, in whole validation intervals.
  c.probe.num_steps = 101
  b = finetune.linear_probe_budget(c, 1000)
  assert (b.eval_every, b.num_steps, b.warmup_steps) == (4, 104, 5)
  assert finetune.linear_probe_budget(c, 50).num_steps == 101


# The feature statistics and the linear-probe stage, against independent computations.


def _separable(rng, n, mean, std, direction):
  """Features near a common mean (std/|mean| about 1%), labels of a linear rule on them."""
  x = mean + std * rng.normal(size=(n, len(mean)))
  y = ((x - mean) / std @ direction > 0).astype(np.float32)
  return x.astype(np.float32), y


def _stage_inputs(seed=0, features=8, classes=3):
  rng = np.random.default_rng(seed)
  mean, std = rng.uniform(0.5, 1.5, features), rng.uniform(0.005, 0.015, features)
  direction = rng.normal(size=(features, classes))
  return [_separable(rng, n, mean, std, direction) for n in (96, 48, 48)]


def test_linear_probe_stage_beats_the_initial_head(root):
  """On near-constant separable features, the head fine-tuning starts from after stage 1 ranks
  validation images far better than the N(0, 0.01²) head it started from before."""
  config = _config(root, linear_probe_epochs=20.0)
  config.probe.weight_decays = (1e-4,)
  train, validation, _ = _stage_inputs(seed=1)
  initial = LinearClassifier(8, 3, rngs=nnx.Rngs(config.seed + 1))  # raw features, N(0, 0.01²)
  before = metrics.mean_auc(validation[1], np.asarray(initial(jnp.asarray(validation[0]))))
  head = LinearClassifier(8, 3, standardize=True, rngs=nnx.Rngs(config.seed + 1))
  head.set_standardization(*classifier.feature_statistics(train[0]))
  stage = finetune.train_linear_probe(config, head, train, validation, epath.Path(root / "lp2"))
  after = stage.validation_mean_auc
  assert after == pytest.approx(metrics.mean_auc(
      validation[1], ((validation[0] - train[0].mean(0)) / train[0].std(0)) @ stage.kernel
      + stage.bias), abs=1e-6)
  assert after > 0.95 and after > before + 0.2, (before, after)

