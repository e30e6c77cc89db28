"""Chest X-ray augmentations that run on device, inside the jitted train step.

Every function is pure JAX and ``jit``/``vmap`` friendly. Random views are computed per example from
a per-example key (`example_keys`), so a view depends only on (key, image), never on the batch size
or on how the batch is sharded over devices. `two_views` makes the source and target views of a
self-supervised step; `center_view` is the deterministic evaluation view; `positions_in_source`
locates a view's dense-grid cells in the source image to match positions between views.
`augment`, `two_views` and `center_view` are jitted themselves (configurations and sizes static),
so a caller outside a jitted step (evaluation, visualisation, prediction) runs one compiled
program instead of dispatching each vmapped primitive eagerly; inside a jitted step they inline.

Conventions
-----------
*Images* are floating ``(B, H, W, C)`` arrays in [0, 1] (``C = 1`` grayscale; any ``C`` works);
outputs are float32 ``(B, S, S, C)`` with ``S = out_size``.

*Normalised source coordinates* ``(y, x)``: y points down, x right; ``(0, 0)`` is the top-left
corner of the image and ``(1, 1)`` the bottom-right corner. Pixel ``(i, j)`` covers
``[i/H, (i+1)/H] x [j/W, (j+1)/W]``; its centre is ``((i + 0.5)/H, (j + 0.5)/W)``. Crop boxes are
``(ymin, xmin, ymax, xmax)`` in these coordinates.

*The geometric map* (one affine resampling). View pixel ``(r, c)`` has view coordinates
``u = (r + 0.5)/S, v = (c + 0.5)/S``. With crop box size ``(h, w)``, centre ``(y_c, x_c)``, angle
``θ`` and the source aspect ``ρ = W/H``, the pixel samples the source at::

    v' = 1 - v if flipped else v
    dy = (u - 1/2) h,  dx = (v' - 1/2) w ρ                 (offsets in units of the image height)
    y = y_c + cos θ dy + sin θ dx,  x = x_c + (cos θ dx - sin θ dy) / ρ

i.e. the sampling rectangle is the crop box rotated by ``θ`` about its centre in source *pixel*
space (a rigid rotation of the anatomy), then resized to ``S x S`` and, if flipped, mirrored left to
right. A positive angle rotates the content counter-clockwise as displayed: for a square image, the
whole-image box and ``θ = 90°`` give exactly ``np.rot90(image)`` (torchvision's sign convention).
Samples are bilinear; source samples outside the image are 0 (the black background of a
radiograph), so the corners of a rotated view fade to black. There is no anti-aliasing: feed
images stored near the training resolution (resized once when decoded) so that a crop is never
shrunk by much more than 2x.

*Photometric* transforms follow the geometric one, in this fixed order, with per-image parameters:
brightness ``x + b``, ``b ~ U(-brightness, brightness)``; contrast ``m + c (x - m)`` around the view
mean ``m`` (over pixels and channels), ``c ~ U(1 - contrast, 1 + contrast)``; clip to [0, 1]; gamma
``x ** g``, ``log g ~ U(log g0, log g1)``; with probability ``blur_prob`` a separable Gaussian blur,
``σ ~ U(blur_sigma)`` in output pixels; with probability ``noise_prob`` additive Gaussian noise
with standard deviation ``~ U(noise_std)``; clip to [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp

NUM_CROP_TRIES = 10  # candidates per crop, as torchvision's RandomResizedCrop


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_scalar(name: str, value, low: float, high: float) -> None:
  if not (_is_real(value) and low <= value <= high):
    raise ValueError(f"AugmentConfig.{name} must be a number in [{low}, {high}], got {value!r}.")


def _check_interval(name: str, value, *, low: float, high: float = math.inf,
                    low_open: bool = False) -> None:
  """``value`` must be a pair ``(a, b)`` with ``low < a`` (or ``<=``) and ``a <= b <= high``."""
  ok = (isinstance(value, tuple) and len(value) == 2 and all(_is_real(v) for v in value)
        and all(math.isfinite(v) for v in value))
  if ok:
    a, b = value
    ok = (a > low if low_open else a >= low) and a <= b <= high
  if not ok:
    bound = f"{low} {'<' if low_open else '<='} a <= b <= {high}"
    raise ValueError(f"AugmentConfig.{name} must be a pair (a, b) with {bound}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Parameters of one view's augmentation (hashable: pass it as a static argument).

  Attributes:
    out_size: side of the square output view, in pixels.
    crop_scale: range of the crop's area as a fraction of the image area (RandomResizedCrop).
    crop_ratio: range of the crop's aspect ratio, width / height in source pixels (log-uniform).
    rotation_deg: rotation angle ~ U(-rotation_deg, rotation_deg) degrees, counter-clockwise
      positive, about the crop centre.
    brightness: additive offset ~ U(-brightness, brightness).
    contrast: contrast factor ~ U(1 - contrast, 1 + contrast), around the view mean.
    gamma: range of the exponent g of ``x ** g``, sampled log-uniformly.
    blur_prob: probability of a Gaussian blur.
    blur_sigma: range of the blur standard deviation, in output pixels (uniform); the kernel has
      ``2 * ceil(3 * blur_sigma[1]) + 1`` taps.
    noise_prob: probability of additive Gaussian noise.
    noise_std: range of the noise standard deviation (uniform).
    hflip_prob: probability of a left-right flip. Off by default: laterality carries meaning in a
      chest radiograph (the heart lies on the patient's left; situs inversus and dextrocardia are
      findings), so a flipped view is a different, abnormal anatomy rather than the same image.
  """

  out_size: int = 224
  crop_scale: tuple[float, float] = (0.25, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  rotation_deg: float = 10.0
  brightness: float = 0.2
  contrast: float = 0.2
  gamma: tuple[float, float] = (0.8, 1.25)
  blur_prob: float = 0.5
  blur_sigma: tuple[float, float] = (0.1, 1.5)
  noise_prob: float = 0.5
  noise_std: tuple[float, float] = (0.0, 0.03)
  hflip_prob: float = 0.0

  def __post_init__(self):
    # Sequences from a ConfigDict (lists) become tuples so the config stays hashable.
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, Sequence) and not isinstance(value, str):
        object.__setattr__(self, field.name, tuple(value))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first field outside its valid range."""
    if not (isinstance(self.out_size, int) and not isinstance(self.out_size, bool)
            and self.out_size >= 1):
      raise ValueError(f"AugmentConfig.out_size must be a positive int, got {self.out_size!r}.")
    _check_interval("crop_scale", self.crop_scale, low=0.0, high=1.0, low_open=True)
    _check_interval("crop_ratio", self.crop_ratio, low=0.0, low_open=True)
    _check_scalar("rotation_deg", self.rotation_deg, 0.0, 180.0)
    _check_scalar("brightness", self.brightness, 0.0, 1.0)
    _check_scalar("contrast", self.contrast, 0.0, 1.0)
    _check_interval("gamma", self.gamma, low=0.0, low_open=True)
    _check_scalar("blur_prob", self.blur_prob, 0.0, 1.0)
    _check_interval("blur_sigma", self.blur_sigma, low=0.0, low_open=True)
    _check_scalar("noise_prob", self.noise_prob, 0.0, 1.0)
    _check_interval("noise_std", self.noise_std, low=0.0)
    _check_scalar("hflip_prob", self.hflip_prob, 0.0, 1.0)

  @property
  def blur_radius(self) -> int:
    """Half-width of the blur kernel: three standard deviations of the widest blur."""
    return math.ceil(3.0 * self.blur_sigma[1])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class View:
  """A batch of augmented views and the geometry that produced them.

  Attributes:
    image: ``(B, S, S, C)`` float32 in [0, 1].
    box: ``(B, 4)`` crop boxes ``(ymin, xmin, ymax, xmax)`` in normalised source coordinates.
    angle: ``(B,)`` rotation angles in degrees, counter-clockwise positive.
    flip: ``(B,)`` bool, whether the view was mirrored left to right.
  """

  image: jax.Array
  box: jax.Array
  angle: jax.Array
  flip: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Views:
  """Source (``_s``) and target (``_t``) views of the same images; fields as in `View`."""

  view_s: jax.Array
  view_t: jax.Array
  box_s: jax.Array
  box_t: jax.Array
  angle_s: jax.Array
  angle_t: jax.Array
  flip_s: jax.Array
  flip_t: jax.Array


def _view_to_source(u: jax.Array, v: jax.Array, box: jax.Array, angle: jax.Array,
                    flip: jax.Array, aspect: float) -> tuple[jax.Array, jax.Array]:
  """The geometric map of the module docstring: view (u, v) -> normalised source (y, x).

  ``u`` and ``v`` broadcast to the grid shape ``(h, w)``; ``box`` is ``(..., 4)`` and ``angle``,
  ``flip`` broadcast to its leading shape ``(...)``; the result has shape ``(..., h, w)``.
  """
  box = jnp.asarray(box, jnp.float32)

  def expand(a):
    return jnp.asarray(a)[..., None, None]

  ymin, xmin, ymax, xmax = (expand(box[..., i]) for i in range(4))
  theta = jnp.deg2rad(expand(angle).astype(jnp.float32))
  v = jnp.where(expand(flip), 1.0 - v, v)
  dy = (u - 0.5) * (ymax - ymin)
  dx = (v - 0.5) * (xmax - xmin) * aspect
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  y = 0.5 * (ymin + ymax) + cos * dy + sin * dx
  x = 0.5 * (xmin + xmax) + (cos * dx - sin * dy) / aspect
  return y, x


def _bilinear(image: jax.Array, py: jax.Array, px: jax.Array) -> jax.Array:
  """Bilinear samples of ``image`` (H, W, C) at pixel coordinates (pixel centres at integers).

  Neighbours outside the image count as 0.
  """
  h, w = image.shape[:2]
  y0, x0 = jnp.floor(py), jnp.floor(px)
  wy, wx = (py - y0)[..., None], (px - x0)[..., None]
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)

  def tap(yi, xi):
    inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    values = image[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
    return jnp.where(inside[..., None], values, 0.0)

  top = (1.0 - wx) * tap(y0, x0) + wx * tap(y0, x0 + 1)
  bottom = (1.0 - wx) * tap(y0 + 1, x0) + wx * tap(y0 + 1, x0 + 1)
  return (1.0 - wy) * top + wy * bottom


def affine_crop(image: jax.Array, box: jax.Array, angle: jax.Array | float = 0.0,
                flip: jax.Array | bool = False, *, out_size: int) -> jax.Array:
  """Crops, rotates, flips and resizes one ``(H, W, C)`` image in a single bilinear resampling.

  Args:
    image: ``(H, W, C)`` floating image.
    box: ``(4,)`` crop box ``(ymin, xmin, ymax, xmax)`` in normalised source coordinates (it may
      extend past the image; outside samples are 0).
    angle: rotation in degrees, counter-clockwise positive, about the box centre.
    flip: mirror the view left to right.
    out_size: side ``S`` of the square output.

  Returns:
    ``(S, S, C)`` float32 view (see the module docstring for the exact map).
  """
  h, w = image.shape[:2]
  centres = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) / out_size
  y, x = _view_to_source(centres[:, None], centres[None, :], box, angle, flip, w / h)
  return _bilinear(image.astype(jnp.float32), y * h - 0.5, x * w - 0.5)


def positions_in_source(box: jax.Array, angle: jax.Array | float, grid_hw: tuple[int, int], *,
                        flip: jax.Array | bool = False,
                        image_hw: tuple[int, int] | None = None) -> jax.Array:
  """Normalised source coordinates of the cell centres of a view's dense ``grid_hw`` grid.

  Cell ``(a, b)`` of an ``(gh, gw)`` feature map covers view coordinates
  ``[a/gh, (a+1)/gh] x [b/gw, (b+1)/gw]``; its centre is mapped to the source with the same map
  that `affine_crop` samples, so cells of two views whose positions coincide see the same source
  pixel (the matching used by dense methods such as VICRegL, Bardes et al. 2022).

  Args:
    box: ``(..., 4)`` crop boxes, as returned in `View.box`.
    angle: rotation angles in degrees, broadcastable to ``box.shape[:-1]``.
    grid_hw: ``(gh, gw)`` size of the dense grid.
    flip: left-right flips, broadcastable to ``box.shape[:-1]``.
    image_hw: ``(H, W)`` of the source images; only the aspect ratio matters, and only when the
      view is rotated. None means square sources.

  Returns:
    ``(..., gh, gw, 2)`` array of ``(y, x)`` positions.
  """
  gh, gw = grid_hw
  aspect = 1.0 if image_hw is None else image_hw[1] / image_hw[0]
  u = (jnp.arange(gh, dtype=jnp.float32) + 0.5) / gh
  v = (jnp.arange(gw, dtype=jnp.float32) + 0.5) / gw
  y, x = _view_to_source(u[:, None], v[None, :], box, angle, flip, aspect)
  return jnp.stack([y, x], axis=-1)


def _crop_box(u: jax.Array, image_hw: tuple[int, int], scale: tuple[float, float],
              ratio: tuple[float, float]) -> jax.Array:
  """`sample_crop_box` from ``(4, NUM_CROP_TRIES)`` uniforms: area, log aspect, y and x offsets."""
  h, w = image_hw
  area = scale[0] + (scale[1] - scale[0]) * u[0]
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  aspect = jnp.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
  # Box height / H and width / W for a box of area a*H*W pixels and aspect r: sqrt(a W / (r H)),
  # sqrt(a r H / W).
  heights = jnp.sqrt(area / aspect * (w / h))
  widths = jnp.sqrt(area * aspect * (h / w))
  fits = (heights <= 1.0) & (widths <= 1.0)
  first = jnp.argmax(fits)
  if w / h < ratio[0]:
    fallback = ((w / ratio[0]) / h, 1.0)
  elif w / h > ratio[1]:
    fallback = (1.0, (h * ratio[1]) / w)
  else:
    fallback = (1.0, 1.0)
  found = jnp.any(fits)
  height = jnp.where(found, heights[first], fallback[0])
  width = jnp.where(found, widths[first], fallback[1])
  ty = jnp.where(found, u[2, first], 0.5)
  tx = jnp.where(found, u[3, first], 0.5)
  ymin, xmin = ty * (1.0 - height), tx * (1.0 - width)
  return jnp.stack([ymin, xmin, jnp.minimum(ymin + height, 1.0), jnp.minimum(xmin + width, 1.0)])


def sample_crop_box(key: jax.Array, image_hw: tuple[int, int], scale: tuple[float, float],
                    ratio: tuple[float, float]) -> jax.Array:
  """A RandomResizedCrop box (torchvision's algorithm, vectorised, with continuous boxes).

  Draws `NUM_CROP_TRIES` candidates with area fraction ``~ U(scale)`` and aspect ratio (width /
  height in source pixels) log-uniform in ``ratio``, and keeps the first that fits inside the image,
  at a uniformly random position. If none fits, falls back to the largest centred box whose aspect
  ratio is clamped to ``ratio``. Boxes are not rounded to whole pixels.

  Returns:
    ``(4,)`` box ``(ymin, xmin, ymax, xmax)`` in normalised source coordinates, inside [0, 1].
  """
  return _crop_box(jax.random.uniform(key, (4, NUM_CROP_TRIES)), image_hw, scale, ratio)


def gaussian_blur(image: jax.Array, sigma: jax.Array | float, radius: int) -> jax.Array:
  """Separable Gaussian blur of one ``(H, W, C)`` image with a traced ``sigma``.

  The kernel has ``2 * radius + 1`` taps with weights ``exp(-k² / 2σ²)`` normalised to sum to one;
  borders repeat the edge pixel, so a constant image is unchanged.
  """
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (taps / sigma) ** 2)
  weights = weights / jnp.sum(weights)

  def along(x, axis):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="edge")
    n = x.shape[axis]
    return sum(weights[k] * jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
               for k in range(2 * radius + 1))

  return along(along(image, 0), 1)


_NUM_PHOTOMETRIC_UNIFORMS = 7


def _photometric(u: jax.Array, noise: jax.Array, image: jax.Array,
                 cfg: AugmentConfig) -> jax.Array:
  """`photometric` from its uniforms ``u`` (7,) and standard normal ``noise`` (image shape)."""

  def between(i, low, high):
    return low + (high - low) * u[i]

  brightness = between(0, -cfg.brightness, cfg.brightness)
  contrast = between(1, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
  gamma = jnp.exp(between(2, math.log(cfg.gamma[0]), math.log(cfg.gamma[1])))
  image = image + brightness
  mean = jnp.mean(image)
  image = jnp.clip(mean + contrast * (image - mean), 0.0, 1.0) ** gamma
  blurred = gaussian_blur(image, between(3, *cfg.blur_sigma), cfg.blur_radius)
  image = jnp.where(u[4] < cfg.blur_prob, blurred, image)
  noisy = image + between(5, *cfg.noise_std) * noise
  image = jnp.where(u[6] < cfg.noise_prob, noisy, image)
  return jnp.clip(image, 0.0, 1.0)


def photometric(key: jax.Array, image: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """Brightness, contrast, gamma, blur and noise of one ``(H, W, C)`` view (module docstring)."""
  k_params, k_noise = jax.random.split(key)
  u = jax.random.uniform(k_params, (_NUM_PHOTOMETRIC_UNIFORMS,))
  return _photometric(u, jax.random.normal(k_noise, image.shape), image, cfg)


def _augment_one(key: jax.Array, image: jax.Array, cfg: AugmentConfig) -> View:
  """One view of one image. All scalar parameters come from a single uniform draw (crop
  candidates, angle, flip, photometric) and the noise from a single normal draw."""
  k_params, k_noise = jax.random.split(key)
  n_box = 4 * NUM_CROP_TRIES
  u = jax.random.uniform(k_params, (n_box + 2 + _NUM_PHOTOMETRIC_UNIFORMS,))
  box = _crop_box(u[:n_box].reshape(4, NUM_CROP_TRIES), image.shape[:2], cfg.crop_scale,
                  cfg.crop_ratio)
  angle = cfg.rotation_deg * (2.0 * u[n_box] - 1.0)
  flip = u[n_box + 1] < cfg.hflip_prob
  view = affine_crop(image, box, angle, flip, out_size=cfg.out_size)
  noise = jax.random.normal(k_noise, view.shape)
  return View(_photometric(u[n_box + 2:], noise, view, cfg), box, angle, flip)


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be a floating (B, H, W, C) array in [0, 1], got shape "
                     f"{images.shape} and dtype {images.dtype}.")


def example_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """Per-example keys: ``fold_in(key, i)`` for one key, or ``key`` itself for a batch of keys.

  ``key`` is a typed key (``jax.random.key``) or raw ``uint32`` key data, either one key (example
  ``i`` then uses ``fold_in(key, i)``) or ``batch_size`` keys, one per example. Passing
  per-example keys makes each result independent of the batch it is processed in.
  """
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  if key.ndim == 0:
    return jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(batch_size))
  if key.shape != (batch_size,):
    raise ValueError(f"key must be one PRNG key or one per example ({batch_size}), got key "
                     f"shape {key.shape}.")
  return key


@functools.partial(jax.jit, static_argnames=("cfg",))
def augment(key: jax.Array, images: jax.Array, cfg: AugmentConfig) -> View:
  """One augmented view of each image; see `example_keys` for ``key``."""
  _check_images(images)
  keys = example_keys(key, images.shape[0])
  return jax.vmap(functools.partial(_augment_one, cfg=cfg))(keys, images)


@functools.partial(jax.jit, static_argnames=("cfg_s", "cfg_t"))
def two_views(key: jax.Array, images: jax.Array, cfg_s: AugmentConfig,
              cfg_t: AugmentConfig | None = None) -> Views:
  """Two independent augmented views (source and target) of each image.

  Each example key (`example_keys`) is split into one key per view, so the views are independent
  of each other, of the other examples, and of the batch sharding.

  Args:
    key: one PRNG key, or one per example.
    images: ``(B, H, W, C)`` floating images in [0, 1].
    cfg_s: the source view's augmentation.
    cfg_t: the target view's augmentation; None reuses ``cfg_s``.
  """
  _check_images(images)
  cfg_t = cfg_s if cfg_t is None else cfg_t
  keys = jax.vmap(jax.random.split)(example_keys(key, images.shape[0]))
  s = jax.vmap(functools.partial(_augment_one, cfg=cfg_s))(keys[:, 0], images)
  t = jax.vmap(functools.partial(_augment_one, cfg=cfg_t))(keys[:, 1], images)
  return Views(view_s=s.image, view_t=t.image, box_s=s.box, box_t=t.box, angle_s=s.angle,
               angle_t=t.angle, flip_s=s.flip, flip_t=t.flip)


@functools.partial(jax.jit, static_argnames=("out_size", "crop_fraction"))
def center_view(images: jax.Array, out_size: int, *, crop_fraction: float = 1.0) -> jax.Array:
  """Deterministic evaluation view: the centred box covering ``crop_fraction`` of each side.

  Resized to ``out_size x out_size`` with the same bilinear sampler as training views (so train and
  evaluation images share their interpolation); the default is a plain resize of the whole image.
  """
  _check_images(images)
  if not 0.0 < crop_fraction <= 1.0:
    raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
  lo, hi = 0.5 - 0.5 * crop_fraction, 0.5 + 0.5 * crop_fraction
  box = jnp.array([lo, lo, hi, hi], jnp.float32)
  return jax.vmap(lambda image: affine_crop(image, box, out_size=out_size))(images)


def whole_image_view(images: jax.Array, size: int) -> jax.Array:
  """uint8 ``(B, H, W, C)`` images as an evaluation shows them to a model: the whole image in
  [0, 1], resampled to ``size x size`` by :func:`center_view` (``classifier.Scorer`` does the
  same)."""
  return center_view(images.astype(jnp.float32) / 255.0, size)


def at_size(x: jax.Array, size: int) -> jax.Array:
  """A floating ``(B, H, W, C)`` batch (images in [0, 1], or masks) at ``size x size``: unchanged
  (as float32) when it is already, else resized by :func:`center_view`."""
  if x.shape[1:3] == (size, size):
    return x.astype(jnp.float32)
  return center_view(x.astype(jnp.float32), size)
