"""``python -m otcxr_jax.predict``: DICOM and PNG read as the builders store them, the evaluation
pipeline's probabilities, the JSON schema, heatmap PNGs, and errors that name their input."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from builders import dicom_writer
from otcxr_jax import config_lib, predict
from otcxr_jax.data import datasets
from otcxr_jax.evaluation import classifier, score_files
from otcxr_jax.modes import finetune
from tests.tiny import tiny_config


# The runs of this module compile the same steps: one persistent cache (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("shared_compilation")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 2-step fine-tuning run from random init on the tiny synthetic dataset (32x32 stored)."""
  root = tmp_path_factory.mktemp("predict")
  c = tiny_config(root / "tfds", mode="finetune")
  c.train.checkpoint_every = 100
  f = c.finetune
  f.split, f.init, f.batch_size, f.num_steps, f.eval_every, f.warmup_steps = (
      "train", "random", 4, 2, 2, 1)
  config_lib.validate(c)
  finetune.run(c, str(root / "finetune"))
  return c, root


def _monochrome1_twelve_bit(pixels: np.ndarray) -> np.ndarray:
  """Stored values of a 12-bit MONOCHROME1 image displaying the 8-bit ``pixels``: brightness
  ``p/255`` is the display value ``round(p * 4095/255)``, and MONOCHROME1 stores ``4095 - it``."""
  return 4095 - np.rint(pixels.astype(np.float64) * 4095 / 255).astype(np.int64)


@pytest.mark.parametrize("shape", [(32, 32), (45, 38)])
def test_monochrome1_dicom_equals_the_png(run, tmp_path, shape):
  config, root = run
  pixels = np.random.default_rng(shape[1]).integers(0, 256, shape).astype(np.uint8)
  png = tmp_path / "image.png"
  Image.fromarray(pixels, "L").save(png)
  dcm = dicom_writer.write_radiograph(tmp_path / "image.dcm", _monochrome1_twelve_bit(pixels),
                                      bits_stored=12, photometric="MONOCHROME1")
  from_png, from_dcm = predict.load_image(png, 32), predict.load_image(dcm, 32)
  assert from_png.shape == from_dcm.shape == (32, 32, 1) and from_dcm.dtype == np.uint8
  if shape == (32, 32):  # no resize: the stored image is the PNG itself
    np.testing.assert_array_equal(from_png[..., 0], pixels)
    np.testing.assert_array_equal(from_dcm, from_png)
  else:  # 16-bit DICOM path vs 8-bit PNG, bicubic resize, quantised: at most one level apart
    assert np.abs(from_dcm.astype(int) - from_png.astype(int)).max() <= 1
  result = predict.predict(root / "finetune", [png, dcm], out=None)
  by_file = [list(p["probabilities"].values()) for p in result["predictions"]]
  np.testing.assert_allclose(by_file[1], by_file[0], atol=1e-3 if shape != (32, 32) else 1e-7)


def test_png_of_a_dataset_image_gets_the_evaluation_probabilities(run, tmp_path):
  config, root = run
  source = datasets.split_source(config, config.data.test_split)
  files = []
  for i in range(3):
    files.append(tmp_path / f"test_{i}.png")
    Image.fromarray(source[i]["image"][..., 0]).save(files[-1])
  result = predict.predict(root / "finetune", files, out=None)
  _, encoder, head = classifier.load_classifier(root / "finetune")
  expected, _ = classifier.predict(classifier.Classifier(encoder, head),
                                   [source[i] for i in range(3)], image_size=32, batch_size=4)
  got = np.array([list(p["probabilities"].values()) for p in result["predictions"]])
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # The run saved its test scores for reports (evaluation/score_files.py): the same numbers.
  saved = score_files.load_scores(root / "finetune")
  scores, labels = classifier.predict(classifier.Classifier(encoder, head), source, image_size=32,
                                      batch_size=4)
  np.testing.assert_allclose(saved.scores, scores, rtol=1e-6)
  np.testing.assert_array_equal(saved.labels, labels)
  assert saved.class_names == datasets.class_names(config)


def test_json_output_schema_and_heatmaps(run, tmp_path, capsys):
  config, root = run
  pixels = np.random.default_rng(0).integers(0, 256, (40, 40)).astype(np.uint8)
  Image.fromarray(pixels, "L").save(tmp_path / "a.png")
  (tmp_path / "other").mkdir()
  Image.fromarray(pixels[::-1], "L").save(tmp_path / "other" / "a.png")
  dicom_writer.write_radiograph(tmp_path / "b.dcm", _monochrome1_twelve_bit(pixels),
                                bits_stored=12, photometric="MONOCHROME1")
  files = [str(tmp_path / "a.png"), str(tmp_path / "other" / "a.png"), str(tmp_path / "b.dcm")]
  out = tmp_path / "heatmaps"
  assert predict.main(["--checkpoint", str(root / "finetune"), *files, "--json",
                       "--out", str(out)]) == 0
  result = json.loads(capsys.readouterr().out)
  classes = list(datasets.class_names(config))
  assert set(result) == {"checkpoint", "dataset", "image_size", "classes", "predictions"}
  assert result["checkpoint"] == str((root / "finetune").resolve())
  assert result["dataset"] == "synthetic_cxr/32_p16" and result["image_size"] == 32
  assert result["classes"] == classes
  assert [p["file"] for p in result["predictions"]] == files
  names = [out / "a_heatmap.png", out / "a_2_heatmap.png", out / "b_heatmap.png"]
  for p, name in zip(result["predictions"], names):
    assert set(p) == {"file", "probabilities", "top_class", "heatmap"}
    assert list(p["probabilities"]) == classes
    assert all(0.0 < v < 1.0 for v in p["probabilities"].values())
    assert p["top_class"] == max(p["probabilities"], key=p["probabilities"].get)
    assert p["heatmap"] == str(name)
    with Image.open(name) as png:
      png.verify()

  assert predict.main(["--checkpoint", str(root / "finetune"), files[0], "--out",
                       str(out)]) == 0
  table = capsys.readouterr().out.splitlines()
  assert table[0] == "| class | a.png |"
  first = result["predictions"][0]["probabilities"]
  assert table[2:2 + len(classes)] == [f"| {c} | {first[c]:.3f} |" for c in classes]


def test_errors_name_their_input(run, tmp_path, capsys):
  config, root = run
  good = tmp_path / "good.png"
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
  missing_dir = tmp_path / "no_such_run"
  assert predict.main(["--checkpoint", str(missing_dir), str(good)]) == 2
  assert f"--checkpoint {missing_dir}: no such directory" in capsys.readouterr().err

  broken = tmp_path / "broken.png"
  broken.write_text("not an image")
  assert predict.main(["--checkpoint", str(root / "finetune"), str(good), str(broken)]) == 2
  err = capsys.readouterr().err
  assert f"{broken}: cannot read it as a DICOM, PNG or JPEG image" in err

  absent = tmp_path / "absent.dcm"
  assert predict.main(["--checkpoint", str(root / "finetune"), str(absent)]) == 2
  assert f"{absent}: no such file." in capsys.readouterr().err

  (tmp_path / "pretrain_run").mkdir()
  (tmp_path / "pretrain_run" / "config.json").write_text(json.dumps({"mode": "pretrain"}))
  assert predict.main(["--checkpoint", str(tmp_path / "pretrain_run"), str(good)]) == 2
  assert "is a 'pretrain' run's config" in capsys.readouterr().err
