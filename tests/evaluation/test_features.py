"""One pass over a split (``features.map_split``, ``features.extract``): every example once, in
order, padding dropped; host fields (labels, text ids) returned as read."""

import jax
import numpy as np
import pytest

from otcxr_jax.evaluation import features


def _records(count: int) -> list[dict]:
  rng = np.random.default_rng(count)
  return [{"image": rng.integers(0, 256, (4, 4, 1), dtype=np.uint8),
           "labels": rng.integers(0, 2, (3,)).astype(np.float32),
           "image_id": f"img{i}" + "x" * (i % 3)} for i in range(count)]


@pytest.mark.parametrize("count", [1, 4, 11])  # fewer than a batch, one batch, a padded last one
def test_map_split_returns_every_example_once_in_order(count):
  records = _records(count)
  (brightness, doubled), fields = features.map_split(
      lambda b: (b["image"].astype(np.float32).mean(axis=(1, 2, 3)), 2 * b["labels"]), records,
      batch_size=4, keys=("image", "labels"), host_keys=("image_id", "labels"))
  np.testing.assert_allclose(brightness, [r["image"].mean() for r in records], rtol=1e-6)
  np.testing.assert_array_equal(doubled, [2 * r["labels"] for r in records])
  np.testing.assert_array_equal(fields["labels"], [r["labels"] for r in records])
  assert fields["image_id"].tolist() == [r["image_id"] for r in records]


def test_extract_returns_features_and_labels_in_order():
  records = _records(7)
  fn = jax.jit(lambda images: images.reshape(images.shape[0], -1)[:, :5].astype(np.float32))
  feats, labels = features.extract(fn, records, batch_size=4)
  assert feats.dtype == labels.dtype == np.float32
  np.testing.assert_array_equal(feats, [r["image"].reshape(-1)[:5] for r in records])
  np.testing.assert_array_equal(labels, [r["labels"] for r in records])


class _CountingSource:
  """A list of records that counts how often each is read."""

  def __init__(self, records):
    self.records, self.reads = records, [0] * len(records)

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    self.reads[i] += 1
    return self.records[i]


def test_extract_many_reads_each_example_once_and_equals_separate_extractions():
  records = _records(7)
  fns = {"first": jax.jit(lambda x: x.reshape(x.shape[0], -1)[:, :5].astype(np.float32)),
         "mean": jax.jit(lambda x: x.astype(np.float32).mean(axis=(1, 2))),
         "pixels": features.pixel_fn(2)}
  source = _CountingSource(records)
  feats, labels = features.extract_many(fns, source, batch_size=4)
  assert source.reads == [1] * 7
  assert list(feats) == list(fns) and all(f.dtype == np.float32 for f in feats.values())
  np.testing.assert_array_equal(labels, [r["labels"] for r in records])
  for name, fn in fns.items():
    alone, alone_labels = features.extract(fn, records, batch_size=4)
    np.testing.assert_array_equal(feats[name], alone)
    np.testing.assert_array_equal(labels, alone_labels)


def test_map_split_refuses_an_empty_source_and_an_unsplittable_batch():
  with pytest.raises(ValueError, match="source is empty"):
    features.map_split(lambda b: b["image"], [], batch_size=4, keys=("image",))
  with pytest.raises(ValueError, match=r"config.segment.batch_size=6 must be divisible by the "
                                       r"number of devices \(4\)"):
    features.map_split(lambda b: b["image"], _records(3), batch_size=6, keys=("image",),
                       field="segment.batch_size")


@pytest.mark.parametrize("readout", ["pooled", "map"])
def test_feature_fn_reads_the_encoders_pooled_feature_or_flattened_map(tmp_path, readout):
  from flax import nnx

  from otcxr_jax.models import factory
  from tests.tiny import tiny_config
  config = tiny_config(tmp_path)
  encoder = factory.build_encoder(config, nnx.Rngs(0))
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)
  got = np.asarray(features.feature_fn(encoder, 32, readout)(images))
  out = encoder(images.astype(np.float32) / 255.0)
  dense = np.asarray(out.dense)
  assert dense.shape == (4, 4, 4, encoder.num_features)
  if readout == "map":  # row-major (y, x, channel): the probe's weight w[y, x, c]
    np.testing.assert_allclose(got, dense.reshape(4, -1), rtol=1e-4, atol=1e-5)
  else:  # the global average pool of the last map (here the dense map)
    np.testing.assert_allclose(got, dense.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_feature_fn_refuses_an_unknown_readout(tmp_path):
  from flax import nnx

  from otcxr_jax.models import factory
  from tests.tiny import tiny_config
  encoder = factory.build_encoder(tiny_config(tmp_path), nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"readout must be one of \('pooled', 'map'\), got 'grid'"):
    features.feature_fn(encoder, 32, "grid")


def test_long_pass_prints_progress_lines_a_short_one_none(monkeypatch, capsys):
  """A clock that advances 10 s per reading and 15 s between lines: 23 records in batches of 4
  are 6 batches; the first line falls at the second batch (20 s after the start; 4 images in the
  10 s since the first batch's end: 0.4 img/s, 15 left: ETA 38 s), the next at the fourth, none
  at the last; a pass without a name prints nothing."""
  import functools
  from otcxr_jax.training import progress
  ticks = iter(range(0, 1000, 10))
  monkeypatch.setattr(features, "PassProgress",
                      functools.partial(progress.PassProgress, clock=lambda: next(ticks)))
  records = _records(23)
  features.map_split(lambda b: b["labels"], records, batch_size=4, keys=("labels",),
                     progress="[probe] train features")
  assert capsys.readouterr().out.splitlines() == [
      "[probe] train features: 8/23 images | 0.4 img/s | ETA 38s",
      "[probe] train features: 16/23 images | 0.4 img/s | ETA 18s"]
  features.map_split(lambda b: b["labels"], records, batch_size=4, keys=("labels",))
  assert capsys.readouterr().out == ""


def test_pass_progress_on_the_real_clock_is_silent_for_a_short_pass():
  from otcxr_jax.training import progress
  shown = progress.PassProgress("[x] pass", 10)
  assert [shown.update(done) for done in (4, 8, 10)] == [None, None, None]
