"""``python -m otcxr_jax.predict``: DICOM and PNG read as the builders store them, the evaluation
pipeline's probabilities, the JSON schema, heatmap PNGs, directories, and failures that name their
input in one line while every other file is still scored."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from builders import dicom_writer
from otcxr_jax import config_lib, predict
from otcxr_jax.data import datasets
from otcxr_jax.evaluation import classifier, score_files
from otcxr_jax.modes import finetune
from tests.tiny import tiny_config




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
  # The DICOM's probabilities are those of the very image it decodes to: stored as a 32x32 PNG,
  # read back without a resize, it scores the same (exact, whatever the head's sensitivity).
  decoded = tmp_path / "decoded.png"
  Image.fromarray(from_dcm[..., 0], "L").save(decoded)
  result = predict.predict(root / "finetune", [png, dcm, decoded], out=None)
  by_file = [list(p["probabilities"].values()) for p in result["predictions"]]
  np.testing.assert_allclose(by_file[1], by_file[2], atol=1e-7)
  # One grey level apart at most: close to the PNG's (identical without a resize).
  np.testing.assert_allclose(by_file[1], by_file[0], atol=1e-2 if shape != (32, 32) else 1e-7)


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
  assert set(result) == {"checkpoint", "dataset", "image_size", "classes", "predictions",
                         "errors"}
  assert result["errors"] == []
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


def _noise_png(path, seed: int, shape=(40, 40)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)).save(path)
  return path


def _error_lines(err: str) -> list[str]:
  """stderr without its closing summary line (``'<n> failed (above), <m> scored.'``)."""
  lines = err.splitlines()
  assert lines and lines[-1].endswith("scored."), err
  return lines[:-1]


def test_a_bad_file_is_named_and_the_others_are_still_scored(run, tmp_path, capsys):
  config, root = run
  good, good2 = _noise_png(tmp_path / "good.png", 1), _noise_png(tmp_path / "good2.png", 2)
  bad = tmp_path / "bad.png"
  bad.write_text("not an image")
  argv = ["--checkpoint", str(root / "finetune"), "--out", str(tmp_path / "heatmaps")]
  assert predict.main([*argv, "--json", str(good), str(bad), str(good2)]) == 1
  captured = capsys.readouterr()
  result = json.loads(captured.out)
  assert [p["file"] for p in result["predictions"]] == [str(good), str(good2)]
  assert all(p["heatmap"] for p in result["predictions"])
  reason = "cannot read it as a DICOM, PNG or JPEG image (UnidentifiedImageError: cannot " \
           "identify image file)."
  assert result["errors"] == [{"file": str(bad), "error": reason}]
  assert _error_lines(captured.err) == [f"{bad}: {reason}"]
  assert captured.err.splitlines()[-1] == "1 failed (above), 2 scored."
  # The same probabilities as each good file alone.
  alone = predict.predict(root / "finetune", [good2])["predictions"][0]["probabilities"]
  assert result["predictions"][1]["probabilities"] == pytest.approx(alone, abs=1e-6)

  assert predict.main([*argv, str(good), str(bad), str(good2)]) == 1
  captured = capsys.readouterr()
  assert captured.out.splitlines()[0] == "| class | good.png | good2.png |"
  assert _error_lines(captured.err) == [f"{bad}: {reason}"]
  assert "Traceback" not in captured.err

  assert predict.main([*argv, "--verbose", str(bad)]) == 1
  err = capsys.readouterr().err
  assert "Traceback" in err and "UnidentifiedImageError" in err and f"{bad}: {reason}" in err


def test_a_directory_stands_for_its_images_sorted(run, tmp_path, capsys):
  config, root = run
  folder = tmp_path / "folder"
  files = [_noise_png(folder / "b.png", 3), _noise_png(folder / "a.PNG", 4)]
  (folder / "notes.txt").write_text("not an image")
  _noise_png(folder / "nested" / "c.png", 5)  # subdirectories are not searched
  assert predict.main(["--checkpoint", str(root / "finetune"), str(folder), "--json",
                       "--out", str(tmp_path / "heatmaps")]) == 0
  captured = capsys.readouterr()
  result = json.loads(captured.out)
  assert [p["file"] for p in result["predictions"]] == [str(files[1]), str(files[0])]
  assert result["errors"] == [] and captured.err == ""


def test_missing_and_empty_inputs_are_named_in_one_line(run, tmp_path, capsys):
  config, root = run
  good = _noise_png(tmp_path / "good.png", 6)
  empty, absent = tmp_path / "empty", tmp_path / "absent.dcm"
  empty.mkdir()
  (empty / "readme.txt").write_text("no images here")
  assert predict.main(["--checkpoint", str(root / "finetune"), str(empty), str(absent), str(good),
                       "--out", str(tmp_path / "heatmaps")]) == 1
  captured = capsys.readouterr()
  assert _error_lines(captured.err) == [
      f"{empty}: no .png, .jpg, .jpeg, .dcm or .dicom file in this directory (its "
      f"subdirectories are not searched).",
      f"{absent}: no such file or directory."]
  assert captured.out.splitlines()[0] == "| class | good.png |"


def test_usage_errors_stop_with_one_line(run, tmp_path, capsys):
  config, root = run
  good = _noise_png(tmp_path / "good.png", 7, (8, 8))
  missing_dir = tmp_path / "no_such_run"
  assert predict.main(["--checkpoint", str(missing_dir), str(good)]) == 2
  assert capsys.readouterr().err == (f"Error: --checkpoint {missing_dir}: no such directory "
                                     f"(expected the workdir of a fine-tuning run).\n")

  (tmp_path / "pretrain_run").mkdir()
  (tmp_path / "pretrain_run" / "config.json").write_text(json.dumps({"mode": "pretrain"}))
  assert predict.main(["--checkpoint", str(tmp_path / "pretrain_run"), str(good)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("Error: --checkpoint ") and "is a 'pretrain' run's config" in err
  assert len(err.splitlines()) == 1

  with pytest.raises(predict.PredictError, match="no such directory"):
    predict.main(["--checkpoint", str(missing_dir), str(good), "--verbose"])

  with pytest.raises(predict.FileError, match="a directory"):
    predict.load_image(tmp_path, 32)


def test_batches_keep_the_order_and_the_numbers(run, tmp_path, monkeypatch):
  """Files are decoded and scored a batch at a time: across batches, the same probabilities in
  the same order as one batch, and heatmap names numbered over the whole run."""
  config, root = run
  files = [_noise_png(tmp_path / f"{i}" / ("a.png" if i in (0, 3) else f"f{i}.png"), 10 + i)
           for i in range(5)]
  bad = tmp_path / "2" / "bad.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  inputs = files[:2] + [bad] + files[2:]
  whole = predict.predict(root / "finetune", inputs, out=tmp_path / "whole")
  monkeypatch.setattr(predict, "MAX_BATCH", 2)
  failed = []
  batched = predict.predict(root / "finetune", inputs, out=tmp_path / "batched",
                            on_error=lambda *args: failed.append(args[:2]))
  assert [p["file"] for p in batched["predictions"]] == [str(f) for f in files]
  # Batches of 2 and of 5 round differently in float32 (up to 3e-6 here); a row scored out of
  # order would differ by tenths.
  for a, b in zip(batched["predictions"], whole["predictions"]):
    assert a["probabilities"] == pytest.approx(b["probabilities"], abs=2e-5)
  assert [pathlib.Path(p["heatmap"]).name for p in batched["predictions"]] == [
      "a_heatmap.png", "f1_heatmap.png", "f2_heatmap.png", "a_2_heatmap.png", "f4_heatmap.png"]
  assert len(failed) == 1 and failed[0][0] == str(bad)
  assert failed[0][1].startswith("cannot read it as a DICOM, PNG or JPEG image (")
  assert batched["errors"] == whole["errors"] == [{"file": str(bad), "error": failed[0][1]}]
