"""Fine-tuning (LP-FT): label fractions end to end, the feature statistics and the linear-probe
stage against independent computations, epoch budgets, per-submodule learning rates, validation
selection and curves, encoder starts from pretraining and fine-tuning checkpoints, and refused
inputs.

End to end: the runs (the unit tests are in tests/modes/test_finetune.py)."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath
from flax import nnx

from otcxr_jax import config_lib, methods
from otcxr_jax.data import augment, datasets
from otcxr_jax.evaluation import classifier, linear_probe, metrics
from otcxr_jax.models import LinearClassifier
from otcxr_jax.modes import finetune
from otcxr_jax.training import checkpoint as ckpt_lib
from otcxr_jax.training import loop
from tests.e2e.shared_runs import COHORT_GROUP
from tests.modes.test_finetune import _config, _stage_inputs

pytestmark = pytest.mark.xdist_group(COHORT_GROUP)


@pytest.fixture(scope="module")
def root(cohort):
  """The cohort's folder (tests/e2e/conftest.py): its data set, built once, and the runs here."""
  return cohort[0]


@pytest.fixture(scope="module")
def pretrained(cohort):
  """The cohort's 2-step tiny pretraining run: its checkpoint directory and its trained encoder's
  state."""
  return cohort[1:]


def _assert_states_equal(a: nnx.Module, b: nnx.Module) -> None:
  """Same parameters and BatchNorm statistics."""
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(nnx.state(a)),
               jax.device_get(nnx.state(b)))


# Each label fraction once, each start at least once (the starts themselves are checked by
# test_pretrained_start_is_the_pretraining_encoder).
@pytest.mark.parametrize("split, init", [("train", "pretrained"), ("train_10pct", "random"),
                                         ("train_1pct", "pretrained")])
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
  # Selection: the best of the evaluations at the stage-2 start (step 0: the linear probe's
  # classifier) and at steps 2 and 4, on validation.
  evaluations = {e["step"]: e["mean_auc"] for e in record["evaluations"]}
  assert sorted(evaluations) == [0, 2, 4]
  assert result["best_step"] == record["best_step"] == max(evaluations, key=evaluations.get)
  assert result["validation_mean_auc"] == pytest.approx(max(evaluations.values()))
  # Both stages' validation curves: stage 1 per weight decay every epoch of its steps, stage 2
  # by step; the stage-2 start scores (whole images through the classifier) what stage 1 scored
  # on the precomputed features with the same head.
  assert result["validation_mean_auc_by_step"] == {str(s): v for s, v in evaluations.items()}
  lp = result["linear_probe"]
  budget = finetune.linear_probe_budget(config, sizes[split])
  assert (lp["num_steps"], lp["eval_every_steps"]) == (budget.num_steps, budget.eval_every)
  assert list(lp["validation_mean_auc_by_step"]) == ["0.001"] and lp["weight_decay"] == 1e-3
  curve = lp["validation_mean_auc_by_step"]["0.001"]
  assert [int(s) for s in curve] == list(range(budget.eval_every, budget.num_steps + 1,
                                               budget.eval_every))
  assert lp["validation_mean_auc"] == curve[str(budget.num_steps)]
  assert lp["validation_mean_auc"] == pytest.approx(evaluations[0], abs=1e-5)
  png = workdir / result["validation_curve_png"]
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
  _assert_states_equal(random_encoder, methods.build_model(config, nnx.Rngs(config.seed)).encoder)


def test_selection_keeps_best_state_and_tests_it_once(root, monkeypatch):
  scripted = iter([0.5, 0.6, 0.9, 0.7])  # validation at steps 0-3: best 2, stop after 3 of 4
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
  # Validation went through the evaluator; test twice: the selected state, and the stage-2
  # start only for the report.
  assert scored == [len(test_source)] * 2
  assert result["best_step"] == 2 and result["validation_mean_auc"] == 0.9
  assert result["stopped_early"] and result["validation_mean_auc_by_step"] == {
      "0": 0.5, "1": 0.6, "2": 0.9, "3": 0.7}
  assert ckpt_lib.latest_checkpoint(classifier.best_checkpoint_dir(workdir), source="")[1] == 2
  assert ckpt_lib.latest_checkpoint(workdir / "checkpoints/finetune", source="")[1] == 3

  # The reported test AUC is the best (step 2) state's, not the last (step 3) state's.
  loaded_config, encoder, head = classifier.load_classifier(workdir)
  assert loaded_config.finetune.split == "train_10pct"
  best_scores, labels = classifier.predict(classifier.Classifier(encoder, head), test_source,
                                           image_size=size, batch_size=4)
  assert metrics.mean_auc(labels, best_scores) == pytest.approx(result["test"]["mean_auc"])
  skeleton = nnx.eval_shape(lambda: classifier.build_classifier(config, labels.shape[1]))
  last, step = ckpt_lib.restore_module(skeleton, workdir / "checkpoints/finetune")
  assert step == 3
  last_scores, _ = classifier.predict(last, test_source, image_size=size, batch_size=4)
  assert not np.allclose(last_scores, best_scores)

  # Run again: nothing left to train, the same selected state and test numbers; the stage-2
  # start is read back, no feature is computed again.
  scored.clear()
  monkeypatch.setattr(classifier, "pooled_features", lambda *a, **k: pytest.fail("recomputed"))
  again = finetune.run(config, str(workdir))
  assert scored == [len(test_source)] * 2
  assert ckpt_lib.latest_checkpoint(workdir / "checkpoints/finetune", source="")[1] == 3
  assert again["test"] == result["test"] and again["best_step"] == 2
  assert again["linear_probe_stage"] == result["linear_probe_stage"]
  # The stage-2 start's test scores: those of the classifier stage 1 gave (finetune_start.npz).
  start = finetune.initial_classifier(
      config, finetune.initial_encoder(config)[0], labels.shape[1],
      datasets.split_source(config, config.finetune.split),
      datasets.split_source(config, config.data.val_split), workdir)[0]
  start_scores, _ = classifier.predict(start, test_source, image_size=size, batch_size=4)
  stage = result["linear_probe_stage"]
  assert stage["test_mean_auc"] == pytest.approx(metrics.mean_auc(labels, start_scores))
  difference = metrics.mean_auc(labels, best_scores) - metrics.mean_auc(labels, start_scores)
  assert stage["fine_tuned_minus_it"] == pytest.approx(difference, abs=1e-6)
  low, high = stage["fine_tuned_minus_it_ci95"]
  assert low <= stage["fine_tuned_minus_it"] <= high


def test_start_from_a_finetuning_checkpoint(root):
  first = root / "first"
  finetune.run(_config(root, split="train_1pct"), str(first))
  config = _config(root, init="pretrained",
                   checkpoint_dir=str(classifier.best_checkpoint_dir(first)))
  encoder, origin = finetune.initial_encoder(config)
  _, selected, _ = classifier.load_classifier(first)
  _assert_states_equal(encoder, selected)
  assert origin["checkpoint_step"] == json.loads((first / "metrics.json").read_text())["best_step"]


def test_a_model_field_other_than_the_start_runs_is_refused(root, pretrained):
  checkpoint_dir, _ = pretrained
  config = _config(root, init="pretrained", checkpoint_dir=str(checkpoint_dir))
  config.model.width = 0.25
  with pytest.raises(ckpt_lib.NetworkConflictError,
                     match=r"config model.width=0.25 conflicts with the network of the run it "
                           r"reads \(config finetune.checkpoint_dir\): model.width=0.125 in "
                           + re.escape(str(checkpoint_dir.parent.parent / "config.json"))):
    finetune.run(config, str(root / "mismatch"))
  assert not (root / "mismatch").exists()  # refused before anything is written


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
  (root / "scalar" / "config.json").write_text(_config(root).to_json_best_effort())
  config = _config(root, init="pretrained", checkpoint_dir=str(root / "scalar/checkpoints/scalar"))
  with pytest.raises(ValueError, match=r"holds no 'encoder' module"):
    finetune.initial_encoder(config)


def test_missing_or_empty_checkpoint_directory_is_named(root):
  missing = root / "nowhere"
  config = _config(root, init="pretrained", checkpoint_dir=str(missing))
  with pytest.raises(FileNotFoundError,
                     match=rf"{re.escape(str(missing))} \(config finetune.checkpoint_dir\) is "
                           rf"not the workdir of a run"):
    finetune.run(config, str(root / "missing"))
  (root / "empty" / "checkpoints" / "finetune_best").mkdir(parents=True)  # a fine-tuning run
  (root / "empty" / "config.json").write_text(_config(root).to_json_best_effort())
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


def test_feature_statistics_are_the_initial_encoders_and_only_the_mean_is_tracked(
    root, cohort_finetuning):
  config, workdir, _ = cohort_finetuning
  encoder, _ = finetune.initial_encoder(config)
  source = datasets.split_source(config, config.finetune.split)
  pooled = np.stack([  # whole image resized, as evaluation views it, one image at a time
      np.asarray(encoder(augment.center_view(
          jnp.asarray(source[i]["image"][None], jnp.float32) / 255.0,
          config.data.image_size)).pooled[0], np.float64) for i in range(len(source))])
  mean, std = pooled.mean(0), pooled.std(0)
  assert (std > 0).any()
  start = np.load(workdir / finetune.START_FILE)  # the stage-2 start: the initial encoder's
  np.testing.assert_allclose(start["feature_mean"], mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(start["feature_std"], std, rtol=1e-4, atol=1e-6)
  # The selected state and the last one keep the scale and the whitening (never trained); the
  # mean follows the training batches (finetune.track_feature_mean, the default).
  assert config.finetune.track_feature_mean and config.finetune.whitened_head
  num_classes = len(datasets.class_names(config))
  skeleton = nnx.eval_shape(lambda: classifier.build_classifier(config, num_classes))
  last, step = ckpt_lib.restore_module(skeleton, workdir / "checkpoints/finetune")
  assert step == 4
  _, selected_encoder, selected = classifier.load_classifier(workdir)
  for head in (selected, last.head):
    np.testing.assert_allclose(head.feature_std[...], std, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(head.feature_projection[...], start["projection"], rtol=1e-6)
  assert not np.allclose(last.head.feature_mean[...], mean, rtol=1e-6, atol=0)
  initial = jax.tree.leaves(nnx.state(encoder, nnx.Param))
  trained = jax.tree.leaves(nnx.state(last.encoder, nnx.Param))
  assert any(not np.allclose(a, b) for a, b in zip(initial, trained))  # the encoder did train


def test_classifier_standardises_before_its_linear_map(root, cohort_finetuning):
  config, workdir, _ = cohort_finetuning
  _, encoder, head = classifier.load_classifier(workdir)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, encoder.num_features)), jnp.float32)
  mean, std = np.asarray(head.feature_mean[...]), np.asarray(head.feature_std[...])
  scale = np.where(std > 1e-6 * (1 + np.abs(mean)), std, 1.0)  # constant features: centred only
  kernel, bias = np.asarray(head.linear.kernel[...]), np.asarray(head.linear.bias[...])
  projection = np.asarray(head.feature_projection[...])  # the linear-probe stage's whitening
  assert not np.allclose(projection, np.eye(len(projection)))
  expected = ((np.asarray(x) - mean) / scale) @ projection @ kernel + bias
  np.testing.assert_allclose(head(x), expected, rtol=1e-4, atol=1e-4)
  folded_kernel, folded_bias = head.affine()
  np.testing.assert_allclose(np.asarray(x) @ np.asarray(folded_kernel) + np.asarray(folded_bias),
                             expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("whiten, whitened_head", [(True, True), (True, False), (False, True)])
def test_linear_probe_stage_is_the_linear_probe(root, whiten, whitened_head):
  config = _config(root, linear_probe_epochs=6.0, eval_every_epochs=2.0)
  config.probe.weight_decays = (1e-4, 0.3)
  config.probe.whiten = whiten
  train, validation, test = _stage_inputs()
  head = LinearClassifier(8, 3, standardize=True, whiten=whitened_head, rngs=nnx.Rngs(0))
  head.set_standardization(*classifier.feature_statistics(train[0]))
  np.testing.assert_allclose(head.feature_mean[...], train[0].mean(0), rtol=1e-6)
  np.testing.assert_allclose(head.feature_std[...], train[0].std(0), rtol=1e-5)
  stage = finetune.train_linear_probe(config, head, train, validation,
                                     epath.Path(root / f"lp_{whiten}_{whitened_head}"))
  assert stage.whitened == whiten
  # A whitening head keeps the stage's whitening as its projection; otherwise it is folded.
  assert (stage.projection is not None) == (whiten and whitened_head)
  budget = finetune.linear_probe_budget(config, len(train[0]))
  assert (budget.batch_size, budget.num_steps, budget.eval_every) == (8, 72, 24)

  # The frozen linear probe on the head's standardised features, with the same steps, batch,
  # rate, seed and whitening: its test scores are those of the stage's head, whose whitening
  # is its projection or was folded into its weights.
  standardised = {name: (np.asarray(head.standardize_features(jnp.asarray(x))), y)
                  for name, (x, y) in (("train", train), ("validation", validation),
                                       ("test", test))}
  probe = linear_probe.run(standardised, workdir=root / f"lp_reference_{whiten}_{whitened_head}",
                           name="reference", whiten=whiten,
                           weight_decays=(1e-4, 0.3), num_steps=budget.num_steps,
                           batch_size=config.probe.batch_size,
                           learning_rate=config.probe.learning_rate, seed=config.seed)
  assert stage.weight_decay == probe.weight_decay
  assert stage.by_weight_decay == pytest.approx(
      {f"{k:g}": v for k, v in probe.val_by_weight_decay.items()}, abs=1e-6)
  head.linear.kernel[...] = jnp.asarray(stage.kernel)
  head.linear.bias[...] = jnp.asarray(stage.bias)
  if stage.projection is not None:
    head.set_projection(stage.projection)
  np.testing.assert_allclose(jax.nn.sigmoid(head(jnp.asarray(test[0]))), probe.test_scores,
                             rtol=1e-3, atol=1e-4)
  kernel, bias = head.affine()  # the same head as one affine map of the raw features
  np.testing.assert_allclose(jax.nn.sigmoid(test[0] @ np.asarray(kernel) + np.asarray(bias)),
                             probe.test_scores, rtol=1e-3, atol=1e-4)
  # The curve: every 24 steps, its last point the selected head's validation AUC.
  curve = stage.curves[f"{stage.weight_decay:g}"]
  assert list(curve) == ["24", "48", "72"]
  assert curve["72"] == pytest.approx(stage.validation_mean_auc)


def test_without_linear_probe_stage_the_head_starts_at_its_init(root):
  config = _config(root, split="train_1pct", linear_probe_epochs=0.0)
  workdir = root / "no_linear_probe"
  result = finetune.run(config, str(workdir))
  assert result["linear_probe"] is None and not (workdir / finetune.LINEAR_PROBE_RECORD).exists()
  assert result["linear_probe_stage"] is None
  start = np.load(workdir / finetune.START_FILE)
  initial = classifier.build_classifier(config, len(datasets.class_names(config)))
  np.testing.assert_array_equal(start["kernel"], initial.head.linear.kernel[...])
  assert (start["feature_std"] > 0).any() and (workdir / finetune.CURVE_PLOT).exists()
