"""Pure-JAX reference implementations of the Mamba2 SSD scan (all math in fp32).

Notation: b batch, T time, H heads, P head dim, N state dim, G groups (H % G == 0), r = H // G,
Q chunk size, c = ceil(T / Q). Head h reads the B/C group h // r. The recurrence per head is

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t (outer) B_t,    y_t = h_t . C_t

``dt`` passed to the scans below is already processed (bias, softplus, clamp; see `process_dt`).

Packed sequences (``seq_idx``): the state is reset to zero wherever the id changes from the
previous position (the id before t = 0 counts as 0). Internally the ids are turned into a
non-decreasing segment counter, so "same segment" is a plain equality test even if ids repeat.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# Full fp32 dots: this module is the numerical oracle, so no TF32/bf16 passes on accelerators.
_HIGHEST = lax.Precision.HIGHEST


def _softplus_t20(v: Array) -> Array:
    """Softplus with torch's threshold: identity for v > 20 (NaN-free gradient)."""
    above = v > 20.0
    safe = jnp.where(above, 20.0, v)
    return jnp.where(above, v, jnp.log1p(jnp.exp(safe)))


def process_dt(
    dt: Array,
    dt_bias: Array | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, math.inf),
) -> Array:
    """Raw dt (b, T, H) -> fp32 dt: + ``dt_bias`` (H,), optional softplus, clamp to ``dt_limit``."""
    out = dt.astype(jnp.float32)
    if dt_bias is not None:
        out = out + dt_bias.astype(jnp.float32)
    if dt_softplus:
        out = _softplus_t20(out)
    return jnp.clip(out, dt_limit[0], dt_limit[1])


def _segments(seq_idx: Array) -> Array:
    """seq_idx (b, T) -> non-decreasing segment numbers (b, T); 0 only on a leading id-0 run."""
    seq = seq_idx.astype(jnp.int32)
    prev = jnp.concatenate([jnp.zeros_like(seq[:, :1]), seq[:, :-1]], axis=1)
    return jnp.cumsum((seq != prev).astype(jnp.int32), axis=1)


def _group_heads(t: Array, num_groups: int) -> Array:
    """Split the head axis (axis 2) into (G, r): (b, T, H, ...) -> (b, T, G, r, ...)."""
    b, seqlen, h = t.shape[:3]
    return t.reshape(b, seqlen, num_groups, h // num_groups, *t.shape[3:])


def _step(
    state: Array, x: Array, dt: Array, A: Array, B: Array, C: Array, keep: Array | None
) -> tuple[Array, Array]:
    """One recurrence step on grouped tensors; state (b, G, r, P, N), x (b, G, r, P), dt (b, G, r),
    A (G, r), B/C (b, G, N), keep (b,) bool or None (False resets the previous state)."""
    decay = jnp.exp(dt * A)
    if keep is not None:
        decay = jnp.where(keep[:, None, None], decay, 0.0)
    upd = jnp.einsum("bgr,bgrp,bgn->bgrpn", dt, x, B, precision=_HIGHEST)
    new_state = decay[..., None, None] * state + upd
    y = jnp.einsum("bgrpn,bgn->bgrp", new_state, C, precision=_HIGHEST)
    return y, new_state


def ssd_step(
    state: Array, x: Array, dt: Array, A: Array, B: Array, C: Array
) -> tuple[Array, Array]:
    """One decode token. state (b, H, P, N), x (b, H, P), dt (b, H) processed, A (H,),
    B/C (b, G, N) -> (y (b, H, P) fp32, new_state (b, H, P, N) fp32)."""
    b, h, p = x.shape
    g = B.shape[1]
    f32 = jnp.float32
    y, new_state = _step(
        state.astype(f32).reshape(b, g, h // g, p, -1),
        x.astype(f32).reshape(b, g, h // g, p),
        dt.astype(f32).reshape(b, g, h // g),
        A.astype(f32).reshape(g, h // g),
        B.astype(f32),
        C.astype(f32),
        None,
    )
    return y.reshape(b, h, p), new_state.reshape(b, h, p, -1)


def _initial_state(initial_states: Array | None, b: int, h: int, p: int, n: int) -> Array:
    if initial_states is None:
        return jnp.zeros((b, h, p, n), jnp.float32)
    return initial_states.astype(jnp.float32)


def ssd_sequential(
    x: Array,
    dt: Array,
    A: Array,
    B: Array,
    C: Array,
    *,
    initial_states: Array | None = None,
    seq_idx: Array | None = None,
) -> tuple[Array, Array]:
    """Ground-truth recurrence via `lax.scan` over time, fp32.

    x (b, T, H, P), dt (b, T, H) processed, A (H,), B/C (b, T, G, N), initial_states (b, H, P, N),
    seq_idx (b, T) int -> (y (b, T, H, P) fp32, final_state (b, H, P, N) fp32).
    """
    b, seqlen, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    f32 = jnp.float32
    h0 = _initial_state(initial_states, b, h, p, n).reshape(b, g, r, p, n)
    a_mat = A.astype(f32).reshape(g, r)
    if seq_idx is None:
        keep = jnp.ones((b, seqlen), bool)
    else:
        seq = seq_idx.astype(jnp.int32)
        prev = jnp.concatenate([jnp.zeros_like(seq[:, :1]), seq[:, :-1]], axis=1)
        keep = seq == prev
    xs = (
        jnp.moveaxis(_group_heads(x.astype(f32), g), 1, 0),
        jnp.moveaxis(_group_heads(dt.astype(f32), g), 1, 0),
        jnp.moveaxis(B.astype(f32), 1, 0),
        jnp.moveaxis(C.astype(f32), 1, 0),
        jnp.moveaxis(keep, 1, 0),
    )

    def body(state: Array, inp: tuple[Array, ...]) -> tuple[Array, Array]:
        x_t, dt_t, b_t, c_t, keep_t = inp
        y_t, state = _step(state, x_t, dt_t, a_mat, b_t, c_t, keep_t)
        return state, y_t

    final, ys = lax.scan(body, h0, xs)
    y = jnp.moveaxis(ys, 0, 1).reshape(b, seqlen, h, p)
    return y, final.reshape(b, h, p, n)


def _neg_part(v: Array) -> Array:
    """min(v, 0) with the gradient of v on v <= 0 (no 1/2 split at ties, unlike jnp.minimum)."""
    return jnp.where(v > 0, 0.0, v)


def _masked_exp(v: Array, mask: Array | None) -> Array:
    """exp(min(v, 0)) where mask, exactly 0 elsewhere; masking happens before exp (finite grads)."""
    v = _neg_part(v)
    if mask is not None:
        v = jnp.where(mask, v, -jnp.inf)
    return jnp.exp(v)


def _pad_time(t: Array, pad: int, mode: str = "constant") -> Array:
    if pad == 0:
        return t
    widths = [(0, 0)] * t.ndim
    widths[1] = (0, pad)
    return jnp.pad(t, widths, mode=mode)


def ssd_chunked(
    x: Array,
    dt: Array,
    A: Array,
    B: Array,
    C: Array,
    chunk_size: int,
    *,
    initial_states: Array | None = None,
    seq_idx: Array | None = None,
) -> tuple[Array, Array]:
    """Chunked SSD, fp32. Same arguments and results as `ssd_sequential`, plus ``chunk_size`` Q.

    Stages: intra-chunk quadratic term (C B^T per group, causal decay mask), per-chunk states,
    state passing with `lax.scan` over chunks, inter-chunk output from the carried state.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    b, seqlen, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    q = chunk_size
    nc = -(-seqlen // q)
    pad = nc * q - seqlen
    f32 = jnp.float32

    # Pad after dt processing: padded steps have dt = 0 (decay 1, no contribution).
    xs = _pad_time(x.astype(f32), pad).reshape(b, nc, q, g, r, p)
    bs = _pad_time(B.astype(f32), pad).reshape(b, nc, q, g, n)
    cs = _pad_time(C.astype(f32), pad).reshape(b, nc, q, g, n)
    dts = _pad_time(dt.astype(f32), pad).reshape(b, nc, q, g, r)
    dts = jnp.moveaxis(dts, 2, -1)  # (b, c, G, r, Q)
    lam = jnp.cumsum(dts * A.astype(f32).reshape(g, r)[:, :, None], axis=-1)
    lam_last = lam[..., -1]  # (b, c, G, r)

    # Masks (None means "everything allowed"), broadcast against (b, c, G, r, ...).
    causal = jnp.tril(jnp.ones((q, q), bool))
    if seq_idx is None:
        intra_mask = causal
        state_mask = None
        carry_keep = None
        prev_mask = None
    else:
        seg = _pad_time(_segments(seq_idx), pad, mode="edge").reshape(b, nc, q)
        seg_end = seg[:, :, -1]  # segment of each chunk's last position (b, c)
        seg_before = jnp.concatenate([jnp.zeros_like(seg_end[:, :1]), seg_end[:, :-1]], axis=1)
        same = seg[:, :, :, None] == seg[:, :, None, :]
        intra_mask = (causal & same)[:, :, None, None]  # (b, c, 1, 1, Q, Q)
        state_mask = (seg == seg_end[..., None])[:, :, None, None]  # (b, c, 1, 1, Q)
        carry_keep = (seg_end == seg_before)[:, :, None, None]  # (b, c, 1, 1)
        prev_mask = (seg == seg_before[..., None])[:, :, None, None]  # (b, c, 1, 1, Q)

    # 1. Intra-chunk: y[m] = sum_{k<=m} (C_m . B_k) exp(lam_m - lam_k) dt_k x_k.
    cb = jnp.einsum("bcmgn,bckgn->bcgmk", cs, bs, precision=_HIGHEST)  # (b, c, G, Q, Q)
    decay = _masked_exp(lam[..., :, None] - lam[..., None, :], intra_mask)  # (b, c, G, r, Q, Q)
    scores = cb[:, :, :, None] * decay * dts[..., None, :]
    y_diag = jnp.einsum("bcgrmk,bckgrp->bcmgrp", scores, xs, precision=_HIGHEST)

    # 2. Chunk states: S_c = sum_k exp(lam_last - lam_k) dt_k x_k (outer) B_k.
    w = _masked_exp(lam_last[..., None] - lam, state_mask) * dts  # (b, c, G, r, Q)
    states = jnp.einsum("bcgrk,bckgrp,bckgn->bcgrpn", w, xs, bs, precision=_HIGHEST)

    # 3. State passing over chunks; the carried state is dropped when a segment starts inside.
    chunk_decay = jnp.exp(lam_last)
    if carry_keep is not None:
        chunk_decay = jnp.where(carry_keep, chunk_decay, 0.0)
    h0 = _initial_state(initial_states, b, h, p, n).reshape(b, g, r, p, n)

    def body(carry: Array, inp: tuple[Array, Array]) -> tuple[Array, Array]:
        dec, s = inp
        return dec[..., None, None] * carry + s, carry

    final, prev = lax.scan(body, h0, (jnp.moveaxis(chunk_decay, 1, 0), jnp.moveaxis(states, 1, 0)))
    prev = jnp.moveaxis(prev, 0, 1)  # state entering each chunk (b, c, G, r, P, N)

    # 4. Inter-chunk output: y[m] += exp(lam_m) (prev . C_m), for rows of the incoming segment.
    e = _masked_exp(lam, prev_mask)  # (b, c, G, r, Q)
    y_off = jnp.einsum("bcmgn,bcgrpn,bcgrm->bcmgrp", cs, prev, e, precision=_HIGHEST)

    y = (y_diag + y_off).reshape(b, nc * q, h, p)[:, :seqlen]
    return y, final.reshape(b, h, p, n)
