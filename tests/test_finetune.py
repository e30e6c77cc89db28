"""Fine-tuning: label fractions end to end, per-submodule learning rates, validation selection,
encoder starts from pretraining and fine-tuning checkpoints, and refused inputs."""

import importlib
import json
import re

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from otcxr_jax import config_lib
from otcxr_jax.data import datasets
from otcxr_jax.evaluation import checkpoints, classifier, metrics
from otcxr_jax.modes import finetune, pretrain
from otcxr_jax.training import loop, optim
from tests.tiny import tiny_config

# A 300-patient cohort: train_1pct holds 3 patients (5 images), at least one batch of 4.
PATIENTS = 300


# The runs of this module compile the same steps: one persistent cache (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("shared_compilation")


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
  for name, value in finetune_fields.items():
    f[name] = value
  config_lib.validate(c)
  return c


@pytest.fixture(scope="module")
def pretrained(root):
  """A 2-step tiny pretraining run: its checkpoint directory and its trained encoder's state."""
  config = tiny_config(root / "tfds")
  config.data.synthetic_patients = PATIENTS
  result = pretrain.run(config, str(root / "pretrain"))
  return root / "pretrain/checkpoints/pretrain", jax.device_get(nnx.state(result.model().encoder))


def _assert_states_equal(a: nnx.Module, b: nnx.Module) -> None:
  """Same parameters and BatchNorm statistics."""
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(nnx.state(a)),
               jax.device_get(nnx.state(b)))


@pytest.mark.parametrize("init", ["random", "pretrained"])
@pytest.mark.parametrize("split", config_lib.FINETUNE_SPLITS)
def test_end_to_end(root, pretrained, split, init):
  checkpoint_dir, _ = pretrained
  config = _config(root, split=split, init=init,
                   checkpoint_dir=str(checkpoint_dir) if init == "pretrained" else "")
  workdir = root / f"{split}_{init}"
  finetune.run(config, str(workdir))

  result = json.loads((workdir / "metrics.json").read_text())
  record = json.loads((workdir / "finetune_selection.json").read_text())
  sizes = {s: len(datasets.split_source(config, s)) for s in config_lib.FINETUNE_SPLITS}
  assert sizes["train_1pct"] < sizes["train_10pct"] < sizes["train"]
  assert result["mode"] == "finetune" and result["split"] == split
  assert result["label_fraction"] == {"train_1pct": 0.01, "train_10pct": 0.1, "train": 1.0}[split]
  assert result["train_images"] == sizes[split]
  assert result["init"] == init
  if init == "pretrained":
    assert result["checkpoint_dir"] == str(checkpoint_dir) and result["checkpoint_step"] == 2
  # Selection: the best of the evaluations at steps 2 and 4, on validation.
  evaluations = {e["step"]: e["mean_auc"] for e in record["evaluations"]}
  assert sorted(evaluations) == [2, 4]
  assert result["best_step"] == record["best_step"] == max(evaluations, key=evaluations.get)
  assert result["validation_mean_auc"] == pytest.approx(max(evaluations.values()))
  _, encoder, head = classifier.load_classifier(workdir)
  scores, labels = classifier.predict(
      classifier.Classifier(encoder, head), datasets.split_source(config, config.data.val_split),
      image_size=config.data.image_size, batch_size=4)
  assert metrics.mean_auc(labels, scores) == pytest.approx(result["validation_mean_auc"])
  # Test: per-class AUCs (undefined where a class has one label value), their mean, intervals.
  test = result["test"]
  assert test["num_examples"] == len(datasets.split_source(config, config.data.test_split))
  assert list(test["per_class_auc"]) == list(datasets.class_names(config))
  defined = [a for a in test["per_class_auc"].values() if a is not None]
  assert defined and test["mean_auc"] == pytest.approx(np.mean(defined))
  low, high = test["mean_auc_ci95"]
  assert 0.0 <= low <= high <= 1.0
  assert json.loads((workdir / "config.json").read_text())["finetune"]["split"] == split


def test_pretrained_start_is_the_pretraining_encoder(root, pretrained):
  checkpoint_dir, trained = pretrained
  config = _config(root, init="pretrained", checkpoint_dir=str(checkpoint_dir))
  encoder, origin = finetune.initial_encoder(config)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(nnx.state(encoder)), trained)
  assert origin == {"init": "pretrained", "checkpoint_dir": str(checkpoint_dir),
                    "checkpoint_step": 2}
  random_encoder, origin = finetune.initial_encoder(_config(root))
  assert origin == {"init": "random"}
  _assert_states_equal(random_encoder, pretrain.build_model(config, nnx.Rngs(config.seed)).encoder)


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
  tx, schedules = finetune.make_optimizer(config)
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


def test_selection_keeps_best_state_and_tests_it_once(root, monkeypatch):
  scripted = iter([0.6, 0.9, 0.7])  # validation at steps 1, 2, 3: best 2, stop after 3 of 4
  monkeypatch.setattr(finetune, "validation_evaluator",
                      lambda scorer, source: lambda model: {"mean_auc": next(scripted)})
  scored = []
  original = classifier.Scorer.__call__

  def counting(self, model, source):
    scored.append(len(source))
    return original(self, model, source)

  monkeypatch.setattr(classifier.Scorer, "__call__", counting)
  config = _config(root, split="train_10pct", eval_every=1, patience=1)
  workdir = root / "selection"
  result = finetune.run(config, str(workdir))

  test_source = datasets.split_source(config, config.data.test_split)
  size = config.data.image_size
  assert scored == [len(test_source)]  # validation went through the evaluator; test once
  assert result["best_step"] == 2 and result["validation_mean_auc"] == 0.9
  assert result["stopped_early"] and result["validation_mean_auc_by_step"] == {
      "1": 0.6, "2": 0.9, "3": 0.7}
  assert checkpoints.latest_checkpoint(classifier.best_checkpoint_dir(workdir), source="")[1] == 2
  assert checkpoints.latest_checkpoint(workdir / "checkpoints/finetune", source="")[1] == 3

  # The reported test AUC is the best (step 2) state's, not the last (step 3) state's.
  loaded_config, encoder, head = classifier.load_classifier(workdir)
  assert loaded_config.finetune.split == "train_10pct"
  best_scores, labels = classifier.predict(classifier.Classifier(encoder, head), test_source,
                                           image_size=size, batch_size=4)
  assert metrics.mean_auc(labels, best_scores) == pytest.approx(result["test"]["mean_auc"])
  skeleton = nnx.eval_shape(lambda: classifier.build_classifier(config, labels.shape[1]))
  last, step = checkpoints.restore_module(skeleton, workdir / "checkpoints/finetune")
  assert step == 3
  last_scores, _ = classifier.predict(last, test_source, image_size=size, batch_size=4)
  assert not np.allclose(last_scores, best_scores)

  # Run again: nothing left to train, the same selected state and test numbers.
  scored.clear()
  again = finetune.run(config, str(workdir))
  assert scored == [len(test_source)]
  assert checkpoints.latest_checkpoint(workdir / "checkpoints/finetune", source="")[1] == 3
  assert again["test"] == result["test"] and again["best_step"] == 2


def test_start_from_a_finetuning_checkpoint(root):
  first = root / "first"
  finetune.run(_config(root, split="train_1pct"), str(first))
  config = _config(root, init="pretrained",
                   checkpoint_dir=str(classifier.best_checkpoint_dir(first)))
  encoder, origin = finetune.initial_encoder(config)
  _, selected, _ = classifier.load_classifier(first)
  _assert_states_equal(encoder, selected)
  assert origin["checkpoint_step"] == json.loads((first / "metrics.json").read_text())["best_step"]


def test_mismatched_checkpoint_names_the_parameter(root, pretrained):
  checkpoint_dir, _ = pretrained
  config = _config(root, init="pretrained", checkpoint_dir=str(checkpoint_dir))
  config.model.width = 0.25
  with pytest.raises(ValueError) as error:
    finetune.run(config, str(root / "mismatch"))
  match = re.search(r"parameter 'params/encoder/([\w/]+)' is shape (\([\d, ]*\)) in the "
                    r"checkpoint but shape (\([\d, ]*\)) in the config's model", str(error.value))
  assert match, str(error.value)
  path, stored, expected = match.groups()
  shapes = lambda c: {"/".join(map(str, k)): tuple(v.get_value().shape) for k, v in
                      nnx.to_flat_state(nnx.state(pretrain.build_encoder(c, nnx.Rngs(0)),
                                                  nnx.Param))}
  assert str(shapes(_config(root))[path]) == stored
  assert str(shapes(config)[path]) == expected != stored


def test_checkpoint_without_an_encoder_is_refused(root):
  class Scalar(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jax.numpy.zeros(()))

  from otcxr_jax.data import pipeline
  batches = pipeline.train_iterator([{"y": np.float32(1.0)}] * 4, global_batch_size=4, seed=0,
                                    transform=pipeline.select_keys(["y"]))
  loop.run(name="scalar", workdir=root / "scalar", model=Scalar(),
           loss_fn=lambda m, b, r: (((m.w[...] - b["y"]) ** 2).mean(), {}), tx=optax.sgd(0.1),
           batches=batches, global_batch_size=4,
           config=loop.LoopConfig(num_steps=1, checkpoint_every=0, tensorboard=False),
           rng=jax.random.key_data(jax.random.key(0)))
  config = _config(root, init="pretrained", checkpoint_dir=str(root / "scalar/checkpoints/scalar"))
  with pytest.raises(ValueError, match=r"holds no 'encoder' module"):
    finetune.initial_encoder(config)


def test_missing_or_empty_checkpoint_directory_is_named(root):
  missing = root / "nowhere"
  config = _config(root, init="pretrained", checkpoint_dir=str(missing))
  with pytest.raises(FileNotFoundError,
                     match=rf"{re.escape(str(missing))} does not exist \(config "
                           rf"finetune.checkpoint_dir\)"):
    finetune.run(config, str(root / "missing"))
  (root / "empty").mkdir()
  config = _config(root, init="pretrained", checkpoint_dir=str(root / "empty"))
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    finetune.run(config, str(root / "missing"))


def test_refuses_another_runs_workdir_and_too_large_batches(root, pretrained):
  with pytest.raises(ValueError, match=r"holds a 'pretrain' run"):
    finetune.run(_config(root), str(root / "pretrain"))
  config = _config(root, split="train_1pct", batch_size=8)
  with pytest.raises(ValueError, match=r"config.finetune.split='train_1pct' has 5 images, fewer "
                                       r"than one batch \(config.finetune.batch_size=8\)"):
    finetune.run(config, str(root / "large_batch"))
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    classifier.load_classifier(root / "large_batch_nowhere")
  with pytest.raises(ValueError, match=r"is a 'pretrain' run's config"):
    classifier.load_classifier(root / "pretrain")


@pytest.mark.parametrize("field,value,expected", [
    ("split", "train_5pct", "one of ('train_1pct', 'train_10pct', 'train')"),
    ("init", "imagenet", "one of ('pretrained', 'random')"),
    ("checkpoint_dir", "", "the checkpoint directory of the run to start from"),
    ("eval_every", 7, "a divisor of finetune.num_steps=6000"),
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


def test_validate_names_bad_augmentation():
  c = config_lib.base_config()
  c.finetune.crop_scale = (0.0, 1.0)
  with pytest.raises(config_lib.ConfigError, match=r"config.finetune: AugmentConfig.crop_scale"):
    config_lib.validate(c)


@pytest.mark.parametrize("name,dataset,split", [
    ("finetune_synthetic", "synthetic_cxr", "train_10pct"),
    ("finetune_nih_1pct", "nih_chest_xray14", "train_1pct"),
    ("finetune_nih_10pct", "nih_chest_xray14", "train_10pct"),
    ("finetune_vinbig_10pct", "vinbig_cxr", "train_10pct"),
    ("finetune_rsna_10pct", "rsna_pneumonia", "train_10pct"),
])
def test_experiment_configs_validate(name, dataset, split):
  c = importlib.import_module(f"configs.{name}").get_config()
  config_lib.validate(c)
  assert (c.mode, c.data.name, c.finetune.split) == ("finetune", dataset, split)
  if name != "finetune_synthetic":
    assert (c.model.encoder, c.data.image_size, c.data.config) == ("resnet50", 224, "224")
