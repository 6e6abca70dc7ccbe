"""Causal grouped-query attention, optionally masked to documents (``seq_idx``); fp32 softmax."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e30


def causal_mask(
    q_pos: jax.Array,
    k_pos: jax.Array,
    q_seq_idx: jax.Array | None = None,
    k_seq_idx: jax.Array | None = None,
    window: int | None = None,
) -> jax.Array:
    """Boolean (b, Tq, Tk) mask: key position <= query position, within ``window`` of it,
    and, when document ids are given, the same document. q_pos, q_seq_idx (b, Tq), k_pos,
    k_seq_idx (b, Tk) int."""
    mask = k_pos[:, None, :] <= q_pos[:, :, None]
    if window is not None:
        mask &= k_pos[:, None, :] > q_pos[:, :, None] - window
    if q_seq_idx is not None:
        mask &= q_seq_idx[:, :, None] == k_seq_idx[:, None, :]
    return mask


def gqa_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled dot-product attention with head_dim^-0.5.

    q (b, Tq, Hq, D); k, v (b, Tk, Hkv, D) with Hq % Hkv == 0, query head h reading KV
    head h // (Hq // Hkv); mask (b, Tq, Tk) bool. Returns (b, Tq, Hq, D) in q's dtype.
    A query row whose mask is all False returns zeros.
    """
    b, tq, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, tq, hkv, hq // hkv, d)
    scores = jnp.einsum("bqkrd,bskd->bkrqs", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (d**-0.5)
    m = mask[:, None, None]
    scores = jnp.where(m, scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(m, probs, 0.0)
    out = jnp.einsum("bkrqs,bskd->bqkrd", probs.astype(v.dtype), v)
    return out.reshape(b, tq, hq, d)
