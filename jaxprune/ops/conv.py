"""Depthwise causal 1-D convolution (Mamba2's conv over [x | B | C])."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def causal_conv1d(
    x: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    *,
    state: jax.Array | None = None,
    seq_idx: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``y[t] = bias + sum_j weight[j] * x[t - K + 1 + j]`` per channel.

    x (b, T, C); weight (K, C) (HF's (C, 1, K) transposed); state (b, K-1, C) holds the K-1
    inputs before x (zeros when None). seq_idx (b, T) stops taps crossing document
    boundaries. Returns y (b, T, C) in x's dtype (accumulated in fp32) and the new state
    (b, K-1, C): the last K-1 inputs.
    """
    b, t, c = x.shape
    k = weight.shape[0]
    if state is None:
        state = jnp.zeros((b, k - 1, c), x.dtype)
    xp = jnp.concatenate([state.astype(x.dtype), x], axis=1)  # (b, T+K-1, C)
    if seq_idx is not None:
        pad = jnp.broadcast_to(seq_idx[:, :1], (b, k - 1))
        sp = jnp.concatenate([pad, seq_idx], axis=1)
    y = jnp.zeros((b, t, c), jnp.float32)
    for j in range(k):
        tap = xp[:, j : j + t].astype(jnp.float32) * weight[j].astype(jnp.float32)
        if seq_idx is not None and j < k - 1:
            tap = jnp.where((sp[:, j : j + t] == seq_idx)[..., None], tap, 0.0)
        y = y + tap
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype), xp[:, t:]
