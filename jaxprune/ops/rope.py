"""Rotary position embeddings in the HF rotate-half convention (halves of the rotary dims pair)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.config import RopeConfig


def rope_inv_freq(cfg: RopeConfig, head_dim: int) -> np.ndarray:
    """Inverse frequencies (rotary_dim // 2,), float64 numpy (static, computed once)."""
    rd = cfg.rotary_dim or head_dim
    inv = 1.0 / (cfg.theta ** (np.arange(0, rd, 2, dtype=np.float64) / rd))
    if cfg.scaling == "llama3":
        inv = _llama3_scale(inv, cfg)
    return inv


def _llama3_scale(inv: np.ndarray, cfg: RopeConfig) -> np.ndarray:
    """Llama-3.1: long wavelengths divided by ``factor``, short kept, smooth blend between."""
    low_wavelen = cfg.original_max_position / cfg.low_freq_factor
    high_wavelen = cfg.original_max_position / cfg.high_freq_factor
    wavelen = 2 * math.pi / inv
    smooth = (cfg.original_max_position / wavelen - cfg.low_freq_factor) / (
        cfg.high_freq_factor - cfg.low_freq_factor
    )
    blended = (1 - smooth) * inv / cfg.factor + smooth * inv
    out = np.where(wavelen > low_wavelen, inv / cfg.factor, inv)
    mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(mid, blended, out)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotate the first ``2 * len(inv_freq)`` dims of each head.

    x (b, T, heads, head_dim); positions (b, T) or (T,) int -> same shape as x.
    """
    rd = 2 * inv_freq.shape[0]
    pos = positions.astype(jnp.float32)
    if pos.ndim == 1:
        pos = pos[None]
    angles = pos[..., None] * jnp.asarray(inv_freq, jnp.float32)  # (b, T, rd/2)
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    xr = x[..., :rd].astype(jnp.float32)
    x1, x2 = xr[..., : rd // 2], xr[..., rd // 2 :]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), x[..., rd:]], axis=-1)
