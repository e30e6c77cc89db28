"""benchmarks/input_pipeline.py: builds a tiny cohort, reads it with pretraining's iterator."""

import json

import numpy as np
import pytest

from benchmarks import input_pipeline


def test_reads_batches_of_the_built_images_and_reports_each_thread_count(tmp_path, capsys):
  out = tmp_path / "result.json"
  assert input_pipeline.main(["--data-dir", str(tmp_path / "tfds"), "--resolution", "32",
                              "--patients", "12", "--batch", "4", "--threads", "0,2",
                              "--batches", "3", "--warmup", "1",
                              "--step-images-per-second", "10", "--json", str(out)]) == 0
  result = json.loads(out.read_text())
  assert [row["threads"] for row in result["rows"]] == [0, 2]
  assert result["build_s"] > 0 and result["train_images"] >= 4
  for row in result["rows"]:
    assert row["shape"] == [4, 32, 32, 1] and row["dtype"] == "uint8"
    assert row["images_per_s"] == pytest.approx(3 * 4 / row["seconds"])
  table = capsys.readouterr().out
  first = result["rows"][0]["images_per_s"]
  assert f"{first / 10:.2f}x" in table
  # a second call finds the cohort instead of building it again
  again = tmp_path / "again.json"
  input_pipeline.main(["--data-dir", str(tmp_path / "tfds"), "--resolution", "32", "--patients",
                       "12", "--batch", "4", "--threads", "1", "--batches", "1",
                       "--json", str(again)])
  assert json.loads(again.read_text())["build_s"] == 0


def test_the_images_are_the_datasets(tmp_path):
  source, _ = input_pipeline.build(str(tmp_path), 32, 12)
  images = {bytes(np.asarray(source[i]["image"])) for i in range(len(source))}
  from otcxr_jax.data import pipeline
  batch = next(pipeline.train_iterator(source, global_batch_size=4, seed=0,
                                       transform=pipeline.select_keys(["image"]), num_threads=0))
  assert all(bytes(image) in images for image in batch["image"])


@pytest.mark.parametrize("args,match", [(["--threads", "a"], "--threads"),
                                        (["--threads", "-1"], "--threads"),
                                        (["--batches", "0"], "--batches")])
def test_bad_arguments_are_refused_before_building(tmp_path, args, match):
  with pytest.raises(SystemExit, match=match):
    input_pipeline.main(["--data-dir", str(tmp_path), *args])
  assert not (tmp_path / "synthetic_cxr").exists()


def test_too_few_images_for_a_batch_is_refused(tmp_path):
  with pytest.raises(SystemExit, match="raise --patients"):
    input_pipeline.main(["--data-dir", str(tmp_path), "--resolution", "32", "--patients", "3",
                         "--batch", "512"])
