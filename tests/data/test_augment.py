"""On-device augmentations: exact geometry, photometric ranges, keys and sharding."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from scipy import ndimage

from otcxr_jax.data import augment

# No randomness besides the crop and rotation: the view is the resampled image itself.
GEOMETRY_ONLY = dict(brightness=0.0, contrast=0.0, gamma=(1.0, 1.0), blur_prob=0.0,
                     noise_prob=0.0)
IDENTITY = augment.AugmentConfig(out_size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                                 rotation_deg=0.0, **GEOMETRY_ONLY)
DEFAULT = augment.AugmentConfig(out_size=16)
# `augment`, `two_views` and `center_view` are jitted (their configs and sizes static); the
# lower-level functions run eagerly on one batch shape, so their tests share compiled primitives.


def _images(batch=8, size=16, channels=1, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, channels))


_crop = jax.jit(augment.affine_crop, static_argnames="out_size")
_blur = jax.jit(augment.gaussian_blur, static_argnames="radius")
_positions = jax.jit(augment.positions_in_source, static_argnames=("grid_hw", "image_hw"))
# Two compiled programs of the same computation (other shapes, shardings or key kinds) fuse and
# round differently.
_close = functools.partial(np.testing.assert_allclose, atol=1e-5)


def test_config_defaults_and_validation():
  cfg = augment.AugmentConfig()
  assert cfg.hflip_prob == 0.0 and cfg.crop_scale == (0.25, 1.0) and cfg.blur_radius == 5
  from_lists = augment.AugmentConfig(crop_scale=[0.25, 1.0], gamma=[0.8, 1.25])  # ConfigDict lists
  assert from_lists == cfg and hash(from_lists) == hash(cfg)  # hashable: a static jit argument
  bad = dict(out_size=0, crop_scale=(0.5, 0.2), crop_ratio=(0.0, 1.0), rotation_deg=-1.0,
             contrast=1.5, gamma=(1.2, 0.8), blur_prob=2.0, blur_sigma=(0.0, 1.0),
             noise_std=(0.1,), hflip_prob=-0.1)
  for field, value in bad.items():
    with pytest.raises(ValueError, match=f"AugmentConfig.{field}"):
      augment.AugmentConfig(**{field: value})
  with pytest.raises(ValueError, match="images"):
    augment.two_views(jax.random.key(0), jnp.zeros((16, 16, 1)), cfg)


def test_identity_crop_reproduces_the_input():
  images = _images()
  views = augment.two_views(jax.random.key(0), images, IDENTITY)
  np.testing.assert_allclose(views.view_s, images, atol=1e-5)
  np.testing.assert_allclose(views.view_t, images, atol=1e-5)
  np.testing.assert_allclose(views.box_s, np.tile([0.0, 0.0, 1.0, 1.0], (8, 1)))
  rgb = _images(batch=1, channels=3)[0]  # any number of channels
  np.testing.assert_allclose(_crop(rgb, jnp.array([0.0, 0.0, 1.0, 1.0]), out_size=16), rgb,
                             atol=1e-5)


def test_crop_box_resized_by_integer_factors():
  image = np.asarray(_images(batch=1)[0])
  box = jnp.array([4 / 16, 2 / 16, 12 / 16, 10 / 16])  # rows 4..11, columns 2..9
  crop = image[4:12, 2:10]
  np.testing.assert_allclose(_crop(image, box, out_size=8), crop, atol=1e-6)
  # Halving samples halfway between pixel pairs: the mean of each 2x2 block.
  halved = crop.reshape(4, 2, 4, 2, 1).mean(axis=(1, 3))
  np.testing.assert_allclose(_crop(image, box, out_size=4), halved, atol=1e-6)
  # Doubling samples at pixel offsets -1/4 and +1/4 around each source pixel.
  rows = 4 + (np.arange(16) + 0.5) / 2 - 0.5
  cols = 2 + (np.arange(16) + 0.5) / 2 - 0.5
  grid = np.stack(np.meshgrid(rows, cols, indexing="ij"))
  doubled = ndimage.map_coordinates(image[..., 0], grid, order=1)
  np.testing.assert_allclose(_crop(image, box, out_size=16)[..., 0], doubled, atol=1e-6)
  # The evaluation view: a resize of the whole image, or of its centred part.
  center = jax.jit(augment.center_view, static_argnums=1, static_argnames="crop_fraction")
  whole = image.reshape(8, 2, 8, 2, 1).mean(axis=(1, 3))
  np.testing.assert_allclose(center(image[None], 8)[0], whole, atol=1e-6)
  np.testing.assert_allclose(center(image[None], 8, crop_fraction=0.5)[0], image[4:12, 4:12],
                             atol=1e-6)
  with pytest.raises(ValueError, match="crop_fraction"):
    augment.center_view(image[None], 8, crop_fraction=0.0)


def test_rotated_crop_matches_the_documented_map():
  h, w, s = 24, 32, 10
  image = np.asarray(jax.random.uniform(jax.random.key(1), (h, w, 1)))
  box = np.array([0.1, 0.55, 0.6, 1.1])  # extends past the right edge: zero fill
  angle, rho = 30.0, w / h
  u = (np.arange(s) + 0.5) / s
  du, dv = np.meshgrid(u - 0.5, u - 0.5, indexing="ij")
  dy, dx = du * (box[2] - box[0]), dv * (box[3] - box[1]) * rho
  c, sn = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
  y = (box[0] + box[2]) / 2 + c * dy + sn * dx
  x = (box[1] + box[3]) / 2 + (c * dx - sn * dy) / rho
  expected = ndimage.map_coordinates(image[..., 0], [y * h - 0.5, x * w - 0.5], order=1,
                                     mode="grid-constant", cval=0.0)
  got = _crop(image, jnp.asarray(box), angle, out_size=s)[..., 0]
  np.testing.assert_allclose(got, expected, atol=1e-5)
  assert (expected == 0).any()  # some samples fell outside the image


def test_rotation_sign_convention_and_flip():
  image = np.asarray(_images(batch=1)[0])
  whole = jnp.array([0.0, 0.0, 1.0, 1.0])
  for k in (1, -1, 2):  # counter-clockwise positive, as np.rot90
    np.testing.assert_allclose(_crop(image, whole, 90.0 * k, out_size=16),
                               np.rot90(image, k), atol=1e-5)
  np.testing.assert_allclose(_crop(image, whole, 0.0, True, out_size=16), image[:, ::-1],
                             atol=1e-6)


def test_crop_boxes_follow_random_resized_crop():
  keys = jax.random.split(jax.random.key(2), 1000)
  scale, ratio, (h, w) = (0.25, 1.0), (3 / 4, 4 / 3), (20, 30)
  sample = jax.jit(jax.vmap(lambda k: augment.sample_crop_box(k, (h, w), scale, ratio)))
  boxes = np.asarray(sample(keys))
  heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  area, aspect = heights * widths, (widths * w) / (heights * h)
  assert (boxes >= 0).all() and (boxes <= 1).all()
  assert (area >= scale[0] - 1e-6).all() and (area <= scale[1] + 1e-6).all()
  assert (aspect >= ratio[0] - 1e-5).all() and (aspect <= ratio[1] + 1e-5).all()
  assert area.min() < 0.3 and area.max() > 0.8  # the whole range is drawn
  assert boxes[:, 0].min() < 0.02 and boxes[:, 2].max() > 0.98  # positions cover the image
  # No candidate can fit (aspect >= 2 at full area): the centred fallback, aspect clamped to 2.
  fallback = jax.jit(augment.sample_crop_box, static_argnums=(1, 2, 3))(
      jax.random.key(0), (16, 16), (1.0, 1.0), (2.0, 3.0))
  np.testing.assert_allclose(fallback, [0.25, 0.0, 0.75, 1.0], atol=1e-7)


def test_keys_determinism_and_batch_independence():
  images = _images()
  key = jax.random.key(3)
  a, b = augment.two_views(key, images, DEFAULT), augment.two_views(key, images, DEFAULT)
  other = augment.two_views(jax.random.key(4), images, DEFAULT)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.allclose(a.view_s, other.view_s)
  assert not np.allclose(a.box_s, a.box_t)  # the two views are drawn independently
  # One key means example i uses fold_in(key, i); raw key data is the same key. (Each kind of
  # key is its own compiled program, so the views agree to rounding.)
  folded = jnp.stack([jax.random.key_data(jax.random.fold_in(key, i)) for i in range(8)])
  jax.tree.map(_close, a, augment.two_views(folded, images, DEFAULT))
  jax.tree.map(_close, a, augment.two_views(jax.random.key_data(key), images, DEFAULT))
  with pytest.raises(ValueError, match="key"):
    augment.two_views(jax.random.split(key, 3), images, DEFAULT)
  # Each example key splits into the source and target keys of the single-view `augment`.
  view_keys = jax.vmap(jax.random.split)(augment.example_keys(key, 8))
  for i, suffix in enumerate("st"):
    single = augment.augment(view_keys[:, i], images, DEFAULT)
    for field in ("image", "box", "angle", "flip"):
      name = "view" if field == "image" else field
      _close(getattr(single, field), getattr(a, f"{name}_{suffix}"))
  # Per-example keys: processing the batch in two halves gives the same examples.
  keys = jax.random.split(key, 8)
  whole = augment.two_views(keys, images, DEFAULT)
  halves = [augment.two_views(keys[i:i + 4], images[i:i + 4], DEFAULT) for i in (0, 4)]
  jax.tree.map(_close, whole, jax.tree.map(lambda p, q: jnp.concatenate([p, q]), *halves))


def test_flip_default_off_and_flip_mirrors_the_view():
  images = _images()
  for seed in range(4):
    views = augment.two_views(jax.random.key(seed), images, DEFAULT)
    assert not np.asarray(views.flip_s).any() and not np.asarray(views.flip_t).any()
  no_noise = dataclasses.replace(DEFAULT, noise_prob=0.0)
  a = augment.two_views(jax.random.key(5), images, no_noise)
  b = augment.two_views(jax.random.key(5), images, dataclasses.replace(no_noise, hflip_prob=1.0))
  assert np.asarray(b.flip_s).all()
  np.testing.assert_allclose(b.view_s, a.view_s[:, :, ::-1], atol=1e-6)


def test_gaussian_blur():
  constant = jnp.full((12, 12, 1), 0.37)
  np.testing.assert_allclose(_blur(constant, 1.3, 4), constant, atol=1e-6)
  image = np.asarray(_images(batch=1, size=12)[0])
  sigma, radius = 1.2, 4
  expected = ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="nearest",
                                     truncate=radius / sigma)
  np.testing.assert_allclose(_blur(image, sigma, radius), expected, atol=1e-6)


def test_photometric_parameters_stay_in_their_ranges():
  images = 0.4 + 0.2 * _images()  # in [0.4, 0.6]: no clipping below
  key = jax.random.key(6)
  brightness = dataclasses.replace(IDENTITY, brightness=0.2)
  shift = np.asarray(augment.two_views(key, images, brightness).view_s - images)
  assert np.ptp(shift, axis=(1, 2, 3)).max() < 1e-5  # one offset per image
  assert np.abs(shift).max() <= 0.2 and np.ptp(shift[:, 0, 0, 0]) > 0.05
  contrast = dataclasses.replace(IDENTITY, contrast=0.3)
  out = np.asarray(augment.two_views(key, images, contrast).view_s)
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)), atol=1e-5)
  factor = out.std(axis=(1, 2, 3)) / np.asarray(images).std(axis=(1, 2, 3))
  assert (factor >= 0.7 - 1e-4).all() and (factor <= 1.3 + 1e-4).all()
  gamma = dataclasses.replace(IDENTITY, gamma=(0.8, 1.25))
  out = np.asarray(augment.two_views(key, images, gamma).view_s)
  exponent = np.log(out) / np.log(np.asarray(images))
  assert np.ptp(exponent, axis=(1, 2, 3)).max() < 1e-3
  assert (exponent >= 0.8 - 1e-4).all() and (exponent <= 1.25 + 1e-4).all()


def test_outputs_stay_in_unit_interval():
  strong = augment.AugmentConfig(out_size=16, brightness=1.0, contrast=1.0, gamma=(0.2, 5.0),
                                 noise_prob=1.0, noise_std=(0.2, 0.5), rotation_deg=180.0)
  views = augment.two_views(jax.random.key(7), _images(), strong)
  for view in (views.view_s, views.view_t):
    assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0
  assert float(views.view_s.min()) == 0.0 and float(views.view_s.max()) == 1.0  # clipping ran


def test_positions_on_a_lattice_and_matched_across_views():
  grid = (4, 4)
  pos_s = np.asarray(_positions(jnp.array([0.0, 0.0, 0.5, 0.5]), 0.0, grid))
  pos_t = np.asarray(_positions(jnp.array([0.25, 0.25, 0.75, 0.75]), 0.0, grid))
  lattice = (np.arange(4) + 0.5) / 8
  np.testing.assert_allclose(pos_s[..., 0], np.broadcast_to(lattice[:, None], grid), atol=1e-7)
  np.testing.assert_allclose(pos_s[..., 1], np.broadcast_to(lattice[None, :], grid), atol=1e-7)
  np.testing.assert_allclose(pos_s[2:, 2:], pos_t[:2, :2], atol=1e-7)  # the shared quarter
  # Rotating the view by 90 degrees permutes its cells exactly as np.rot90 permutes the image.
  pos_r = _positions(jnp.array([0.0, 0.0, 0.5, 0.5]), 90.0, grid)
  np.testing.assert_allclose(pos_r, np.rot90(pos_s), atol=1e-6)
  batched = _positions(jnp.array([[0.0, 0.0, 0.5, 0.5]] * 2),
                                        jnp.array([0.0, 90.0]), grid)
  np.testing.assert_allclose(batched, np.stack([pos_s, np.rot90(pos_s)]), atol=1e-6)


@pytest.mark.parametrize("flip", [False, True])
def test_positions_are_where_the_view_samples(flip):
  # Two linear ramps hold each pixel's own normalised (y, x); bilinear sampling is exact on them,
  # so a view of the ramps must read back positions_in_source at full resolution.
  h, w, s = 24, 32, 6
  ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
  ramps = np.stack([ys, xs], axis=-1)
  box, angle = jnp.array([0.3, 0.3, 0.7, 0.7]), 25.0
  view = _crop(ramps, box, angle, flip, out_size=s)
  positions = _positions(box, angle, (s, s), flip=flip, image_hw=(h, w))
  np.testing.assert_allclose(view, positions, atol=1e-5)


def test_sharded_batch_gives_the_unsharded_result():
  # As in the train step: one replicated key, the batch split over a ('data',) mesh of 4 devices.
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  assert mesh.devices.size == 4
  images, key = _images(), jax.random.key(8)
  batch = NamedSharding(mesh, P("data"))
  got = augment.two_views(jax.device_put(key, NamedSharding(mesh, P())),
                          jax.device_put(images, batch), DEFAULT)
  assert got.view_s.sharding.is_equivalent_to(batch, 4)
  jax.tree.map(_close, got, augment.two_views(key, images, DEFAULT))  # unsharded


def test_the_two_evaluation_views():
  """``whole_image_view``: uint8 images to [0, 1] through the resampler, always; ``at_size``:
  floating images or masks resized only when their size differs."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(2, 12, 12, 1), dtype=np.uint8)
  np.testing.assert_array_equal(
      augment.whole_image_view(jnp.asarray(images), 8),
      augment.center_view(jnp.asarray(images, jnp.float32) / 255.0, 8))
  x = jnp.asarray(images, jnp.float32) / 255.0
  same = augment.at_size(x, 12)
  assert same.dtype == jnp.float32
  np.testing.assert_array_equal(same, x)  # no resampling at the model's size
  np.testing.assert_array_equal(augment.at_size(x, 8), augment.center_view(x, 8))
  masks = jnp.asarray(images > 128)
  assert augment.at_size(masks, 12).dtype == jnp.float32
