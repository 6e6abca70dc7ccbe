"""RMS norms, computed in fp32 and cast back to the input dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mean_sq(xf: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of squares over the last axis, over the ``mask``ed-in entries only."""
    if mask is None:
        return jnp.mean(xf * xf, axis=-1, keepdims=True)
    m = mask.astype(jnp.float32)
    return jnp.sum(xf * xf * m, axis=-1, keepdims=True) / jnp.maximum(
        jnp.sum(m, -1, keepdims=True), 1.0
    )


def rms_norm(
    x: jax.Array, weight: jax.Array, eps: float, mask: jax.Array | None = None
) -> jax.Array:
    """``weight * x / rms(x)`` over the last axis. x (..., d), weight (d,) -> (..., d).

    ``mask`` (d,) 0/1 takes the RMS over the kept channels only, as a model whose other
    channels were removed would (the caller zeroes the removed channels' weights).
    """
    xf = x.astype(jnp.float32)
    var = _mean_sq(xf, mask)
    return (xf * jax.lax.rsqrt(var + eps) * weight.astype(jnp.float32)).astype(x.dtype)


def gated_rms_norm(
    x: jax.Array, z: jax.Array, weight: jax.Array, eps: float, mask: jax.Array | None = None
) -> jax.Array:
    """Mamba2's gated group norm ``w * groupRMS(x * silu(z))`` (gate before the norm).

    x, z: (..., G, C) with the norm taken per group over its C channels; weight (G, C);
    ``mask`` (G, C) 0/1 restricts each group's RMS to its kept channels.
    """
    xf = x.astype(jnp.float32) * jax.nn.silu(z.astype(jnp.float32))
    var = _mean_sq(xf, mask)
    return (xf * jax.lax.rsqrt(var + eps) * weight.astype(jnp.float32)).astype(x.dtype)
