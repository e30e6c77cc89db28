"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Equivalent to timm's ``VisionTransformer`` with its defaults (class token, learned absolute
position embedding for 1 + N tokens, pre-norm blocks with LayerNorm eps 1e-6, fused qkv
projection with bias, exact-GELU MLP, final LayerNorm, linear head on the class token). With
``in_channels=3, num_classes=1000, image_size=224`` the parameters number 22,050,664 (S/16) and
86,567,656 (B/16), as timm's ``vit_small_patch16_224`` and ``vit_base_patch16_224``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from otcxr_jax.models.attention import multi_head_attention
from otcxr_jax.models.common import EncoderOutput, match_channels
from otcxr_jax.models.initializers import Dtype, normal, torch_default_uniform
from otcxr_jax.models.layers import Mlp, dense_init, layer_norm, linear


class SelfAttention(nnx.Module):
  """Multi-head self-attention with a fused qkv projection, as timm's ``Attention``."""

  def __init__(
      self, dim: int, num_heads: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs
  ):
    self.num_heads = num_heads
    self.qkv = linear(dim, 3 * dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.proj = linear(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    out, _ = multi_head_attention(q, k, v, self.num_heads)
    return self.proj(out)


class Block(nnx.Module):
  """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``."""

  def __init__(
      self, dim: int, num_heads: int, mlp_ratio: float, *, dtype: Dtype, param_dtype: Dtype,
      rngs: nnx.Rngs
  ):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = layer_norm(dim, **kw)
    self.attn = SelfAttention(dim, num_heads, **kw)
    self.norm2 = layer_norm(dim, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


def stage_blocks(depth: int) -> tuple[int, ...]:
  """1-based indices of the blocks whose tokens are returned as stages: ``ceil(k*depth/4)``."""
  return tuple(sorted({-(-k * depth // 4) for k in range(1, 5)}))


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ViT(nnx.Module):
  """Vision Transformer returning the patch-token grid as its dense map.

  ``dense`` is the patch tokens after the final LayerNorm as a ``(B, H/p, W/p, dim)`` grid,
  ``pooled`` the class token after the final LayerNorm, ``stages`` the patch tokens (before the
  final norm) after blocks ``ceil(k*depth/4)``, k = 1..4, named ``'block<i>'``.

  Inputs whose size differs from ``image_size`` are accepted when divisible by the patch size:
  the grid part of the position embedding is then bilinearly resized to the new grid (see
  ``position_embedding``).

  Attributes:
    num_features: ``dim``.
    stage_channels: stage name -> ``dim``.
    stage_strides: stage name -> ``patch_size``.
  """

  def __init__(
      self,
      *,
      patch_size: int = 16,
      dim: int,
      depth: int,
      num_heads: int,
      mlp_ratio: float = 4.0,
      image_size: int | tuple[int, int] = 224,
      in_channels: int = 1,
      num_classes: int | None = None,
      dtype: Dtype = jnp.float32,
      param_dtype: Dtype = jnp.float32,
      rngs: nnx.Rngs,
  ):
    """Builds the network.

    Args:
      patch_size: side of the square patches (stride of the patch embedding).
      dim: token width.
      depth: number of transformer blocks.
      num_heads: attention heads; must divide ``dim``.
      mlp_ratio: MLP hidden width relative to ``dim``.
      image_size: size (int or (H, W)) the position embedding is laid out for.
      in_channels: channels of the patch embedding; 1- and 3-channel inputs are adapted
        (see ``match_channels``).
      num_classes: size of the linear head on the class token; ``None`` for no head.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); outputs are float32.
      param_dtype: parameter dtype.
      rngs: random generators for initialisation.
    """
    height, width = _pair(image_size)
    for name, value in (("patch_size", patch_size), ("dim", dim), ("depth", depth),
                        ("num_heads", num_heads), ("in_channels", in_channels)):
      if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if dim % num_heads:
      raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
    if height % patch_size or width % patch_size:
      raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}")
    if num_classes is not None and num_classes < 1:
      raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    self.patch_size = patch_size
    self.in_channels = in_channels
    self.dtype = dtype
    self.grid = (height // patch_size, width // patch_size)
    # timm leaves the patch embedding at torch's Conv2d default initialisation.
    patch_init = torch_default_uniform(in_channels * patch_size**2)
    self.patch_embed = nnx.Conv(in_channels, dim, (patch_size, patch_size), strides=patch_size,
                                padding="VALID", kernel_init=patch_init, bias_init=patch_init,
                                **kw)
    self.cls_token = nnx.Param(normal(1e-6)(rngs.params(), (1, 1, dim), param_dtype))
    self.pos_embed = nnx.Param(
        dense_init(rngs.params(), (1, 1 + math.prod(self.grid), dim), param_dtype))
    self.blocks = nnx.List([Block(dim, num_heads, mlp_ratio, **kw) for _ in range(depth)])
    self.norm = layer_norm(dim, **kw)
    self.head = linear(dim, num_classes, **kw) if num_classes is not None else None

    self.stage_indices = stage_blocks(depth)
    self.num_features = dim
    self.stage_channels = {f"block{i}": dim for i in self.stage_indices}
    self.stage_strides = {f"block{i}": patch_size for i in self.stage_indices}

  def position_embedding(self, grid: tuple[int, int]) -> jax.Array:
    """``(1, 1 + gh*gw, dim)`` position embedding for a ``grid`` of patches.

    The class token's embedding is kept; the grid part is resized bilinearly with
    ``jax.image.resize`` (half-pixel centres; antialiased when shrinking) if ``grid`` differs
    from the one the model was built for.
    """
    pos = self.pos_embed[...]
    if grid == self.grid:
      return pos
    dim = pos.shape[-1]
    patches = pos[:, 1:].reshape(1, *self.grid, dim).astype(jnp.float32)
    patches = jax.image.resize(patches, (1, *grid, dim), method="bilinear")
    return jnp.concatenate([pos[:, :1], patches.reshape(1, -1, dim).astype(pos.dtype)], axis=1)

  def __call__(self, images: jax.Array) -> EncoderOutput:
    """Encodes ``(B, H, W, C)`` images with H and W multiples of the patch size."""
    x = match_channels(images, self.in_channels)
    b, h, w, _ = x.shape
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(
          f"image size {(h, w)} must be a multiple of patch_size={self.patch_size}")
    grid = (h // self.patch_size, w // self.patch_size)
    tokens = self.patch_embed(x).reshape(b, grid[0] * grid[1], -1)
    pos = self.position_embedding(grid).astype(self.dtype)
    cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (b, 1, tokens.shape[-1]))
    x = jnp.concatenate([cls + pos[:, :1], tokens.astype(self.dtype) + pos[:, 1:]], axis=1)

    stages = {}
    for i, block in enumerate(self.blocks, start=1):
      x = block(x)
      if i in self.stage_indices:
        stages[f"block{i}"] = x[:, 1:].reshape(b, *grid, -1).astype(jnp.float32)
    x = self.norm(x)
    pooled = x[:, 0]
    logits = None if self.head is None else self.head(pooled).astype(jnp.float32)
    return EncoderOutput(
        dense=x[:, 1:].reshape(b, *grid, -1).astype(jnp.float32),
        pooled=pooled.astype(jnp.float32),
        stages=stages,
        logits=logits,
    )


VARIANTS: dict[str, dict[str, int]] = {
    "S/16": dict(patch_size=16, dim=384, depth=12, num_heads=6),
    "B/16": dict(patch_size=16, dim=768, depth=12, num_heads=12),
}


def vit_s16(**kwargs) -> ViT:
  """ViT-S/16: patch 16, width 384, 12 blocks, 6 heads; ``kwargs`` go to :class:`ViT`."""
  return ViT(**VARIANTS["S/16"], **kwargs)


def vit_b16(**kwargs) -> ViT:
  """ViT-B/16: patch 16, width 768, 12 blocks, 12 heads; ``kwargs`` go to :class:`ViT`."""
  return ViT(**VARIANTS["B/16"], **kwargs)
