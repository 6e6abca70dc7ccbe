"""Blockwise (flash-style) causal attention in pure JAX, memory linear in the sequence length.

Queries are split into blocks of ``block_q`` and keys into blocks of ``block_k``. Each query
block runs an online softmax (fp32 running max and sum) over only the KV blocks that can hold
a visible key: a (query block, KV block) pair is visited when the blocks' position ranges
overlap causally (and within the window, and their document-id ranges overlap), which for
ordinary causal attention is the lower triangle (a diagonal band with a sliding window) and
for decoding the filled part of the cache. The visited KV range of each query block is a
dynamic trip count, so skipped blocks cost no work. The backward pass (``custom_vjp``)
recomputes the scores blockwise from the saved log-sum-exp.

Semantics equal ``jaxprune.ops.attention`` 's reference: key j is visible from query i iff
``0 <= k_pos[j] <= q_pos[i]``, ``k_pos[j] > q_pos[i] - window`` and the document ids match; a
query with no visible key returns zeros.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

_NEG = -1e30
_BIG = 2**30
#: Default block sizes, chosen by measurement on CPU (see experiments/bench_attention.py).
BLOCK_Q = 256
BLOCK_K = 256


class _Meta(NamedTuple):
    """Static facts of one call."""

    window: int | None
    bq: int
    bk: int
    tq: int
    tk: int
    skip: bool = True


def _pad(x: jax.Array, n: int, value) -> jax.Array:
    """Pad axis 1 of ``x`` to length ``n`` with ``value``."""
    if x.shape[1] == n:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, n - x.shape[1])
    return jnp.pad(x, widths, constant_values=value)


def _summaries(pos, seg, valid, block):
    """Per block (over batch and rows): min / max position and document id of valid rows."""
    b, n = pos.shape
    shape = (b, n // block, block)
    pos, seg, valid = pos.reshape(shape), seg.reshape(shape), valid.reshape(shape)
    axes = (0, 2)
    return (
        jnp.min(jnp.where(valid, pos, _BIG), axes),
        jnp.max(jnp.where(valid, pos, -_BIG), axes),
        jnp.min(jnp.where(valid, seg, _BIG), axes),
        jnp.max(jnp.where(valid, seg, -_BIG), axes),
    )


def _needed(q_pos, q_seg, k_pos, k_seg, meta: _Meta) -> jax.Array:
    """(nq, nk) bool: which block pairs may hold a visible (query, key) pair. Inputs padded
    to whole blocks (padded queries have q_pos = -1, padded keys k_pos = -1)."""
    qmin, qmax, qsmin, qsmax = _summaries(q_pos, q_seg, q_pos >= 0, meta.bq)
    kmin, kmax, ksmin, ksmax = _summaries(k_pos, k_seg, k_pos >= 0, meta.bk)
    need = kmin[None, :] <= qmax[:, None]
    if meta.window is not None:
        need &= kmax[None, :] > qmin[:, None] - meta.window
    need &= (ksmin[None, :] <= qsmax[:, None]) & (ksmax[None, :] >= qsmin[:, None])
    return need if meta.skip else jnp.ones_like(need)


def _ranges(need: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First and one-past-last True column of each row (an empty row gives (0, 0))."""
    n = need.shape[1]
    j = jnp.arange(n, dtype=jnp.int32)
    hi = jnp.max(jnp.where(need, j + 1, 0), axis=1)
    lo = jnp.minimum(jnp.min(jnp.where(need, j, n), axis=1), hi)
    return lo, hi


def _visible(qp, qs, kp, ks, window):
    """(b, bq, bk) bool mask of one block pair."""
    m = (kp[:, None, :] >= 0) & (kp[:, None, :] <= qp[:, :, None])
    if window is not None:
        m &= kp[:, None, :] > qp[:, :, None] - window
    return m & (qs[:, :, None] == ks[:, None, :])


def _slice(x: jax.Array, start, size: int) -> jax.Array:
    """``x[:, start:start + size]`` with a traced start."""
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)


def _full(q_pos, q_seg, k_pos, k_seg, meta: _Meta) -> jax.Array:
    """(nq, nk) bool: block pairs whose every (query, key) pair is visible, so that their
    scores need no mask (padded inputs as in :func:`_needed`; a KV block that runs past
    ``tk`` is never full, its first slots having been seen already)."""
    qmin, qmax, qsmin, qsmax = _summaries(q_pos, q_seg, q_pos >= 0, meta.bq)
    kmin, kmax, ksmin, ksmax = _summaries(k_pos, k_seg, k_pos >= 0, meta.bk)
    bq, bk = meta.bq, meta.bk
    q_ok = jnp.all((q_pos >= 0).reshape(q_pos.shape[0], -1, bq), axis=(0, 2))
    k_ok = jnp.all((k_pos >= 0).reshape(k_pos.shape[0], -1, bk), axis=(0, 2))
    k_ok &= (jnp.arange(k_ok.shape[0]) + 1) * bk <= meta.tk
    full = q_ok[:, None] & k_ok[None, :] & (kmax[None, :] <= qmin[:, None])
    if meta.window is not None:
        full &= kmin[None, :] > qmax[:, None] - meta.window
    one_doc = (qsmin == qsmax)[:, None] & (ksmin == ksmax)[None, :]
    return full & one_doc & (qsmin[:, None] == ksmin[None, :])


def _forward(q, k, v, q_pos, k_pos, q_seg, k_seg, meta: _Meta):
    """Returns out (b, Tq, Hq, D) in q's dtype and lse (nq, b, Hkv, r, bq) fp32.

    Keys are not padded (a decode step must not copy the cache): the last KV block is read
    at ``tk - bk`` and its slots before ``j * bk`` are masked as already seen. With more than
    one query (prefill, training) K and V are laid out head-major once, so that no block
    pair transposes them again; block pairs that are entirely visible skip the mask."""
    b, tq, hq, d = q.shape
    hkv, bq, bk, tk = k.shape[2], meta.bq, meta.bk, meta.tk
    r, nq, nk = hq // hkv, -(-tq // bq), -(-tk // bk)
    scale = d**-0.5
    qp_pad, qs_pad = _pad(q_pos, nq * bq, -1), _pad(q_seg, nq * bq, 0)
    kp_pad, ks_pad = _pad(k_pos, nk * bk, -1), _pad(k_seg, nk * bk, 0)
    lo, hi = _ranges(_needed(qp_pad, qs_pad, kp_pad, ks_pad, meta))
    full = _full(qp_pad, qs_pad, kp_pad, ks_pad, meta)
    # (b, Hkv, r, nq*bq, D): each query block is a contiguous slice for the score matmuls
    q_t = _pad(q, nq * bq, 0).reshape(b, nq * bq, hkv, r, d).transpose(0, 2, 3, 1, 4)
    head_major = tq > 1
    if head_major:  # (b, Hkv, Tk, D)
        k_in, v_in, kv_axis, kv_sub = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), 2, "bksd"
    else:
        k_in, v_in, kv_axis, kv_sub = k, v, 1, "bskd"
    f32 = partial(jnp.einsum, preferred_element_type=jnp.float32)

    def q_block(i):
        qb = jax.lax.dynamic_slice_in_dim(q_t, i * bq, bq, axis=3)
        qp, qs = _slice(qp_pad, i * bq, bq), _slice(qs_pad, i * bq, bq)

        def update(carry, s, vb, mask):
            m, l, acc = carry
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            if mask is not None:
                p = jnp.where(mask, p, 0.0)
            corr = jnp.exp(m - m_new)
            pv = f32(f"bkrqs,{kv_sub}->bkrqd", p.astype(vb.dtype), vb)
            return m_new, l * corr + p.sum(-1), acc * corr[..., None] + pv

        def body(j, carry):
            start = jnp.minimum(j * bk, tk - bk)
            kb = jax.lax.dynamic_slice_in_dim(k_in, start, bk, axis=kv_axis).astype(q.dtype)
            vb = jax.lax.dynamic_slice_in_dim(v_in, start, bk, axis=kv_axis).astype(q.dtype)
            s = f32(f"bkrqd,{kv_sub}->bkrqs", qb, kb) * scale

            def masked(carry):
                slots = start + jnp.arange(bk)
                kp, ks = _slice(k_pos, start, bk), _slice(k_seg, start, bk)
                mask = _visible(qp, qs, kp, ks, meta.window)
                mask = (mask & (slots >= j * bk)[None, None, :])[:, None, None]
                return update(carry, jnp.where(mask, s, _NEG), vb, mask)

            return jax.lax.cond(full[i, j], lambda c: update(c, s, vb, None), masked, carry)

        init = (
            jnp.full((b, hkv, r, bq), _NEG, jnp.float32),
            jnp.zeros((b, hkv, r, bq), jnp.float32),
            jnp.zeros((b, hkv, r, bq, d), jnp.float32),
        )
        m, l, acc = jax.lax.fori_loop(lo[i], hi[i], body, init)
        seen = l > 0
        out = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0)
        return out.astype(q.dtype), jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)

    out, lse = jax.lax.map(q_block, jnp.arange(nq))  # (nq, b, hkv, r, bq, d)
    out = out.transpose(1, 0, 4, 2, 3, 5).reshape(b, nq * bq, hq, d)[:, :tq]
    return out, lse


def _backward(q, k, v, q_pos, k_pos, q_seg, k_seg, out, lse, g, meta: _Meta):
    """Flash backward: one pass over KV blocks, each over its visible query blocks; dq is
    accumulated in a (b, Hkv, r, Tq, D) fp32 buffer carried through the loop. Every operand
    is laid out head-major once; entirely visible block pairs skip the mask."""
    b, tq, hq, d = q.shape
    hkv, bq, bk = k.shape[2], meta.bq, meta.bk
    r, nq, nk = hq // hkv, -(-tq // bq), -(-meta.tk // bk)
    scale = d**-0.5
    qp_pad, qs_pad = _pad(q_pos, nq * bq, -1), _pad(q_seg, nq * bq, 0)
    kp_pad, ks_pad = _pad(k_pos, nk * bk, -1), _pad(k_seg, nk * bk, 0)
    lo, hi = _ranges(_needed(qp_pad, qs_pad, kp_pad, ks_pad, meta).T)
    full = _full(qp_pad, qs_pad, kp_pad, ks_pad, meta)

    def heads(x, n):  # (b, T, Hq, D) -> (b, Hkv, r, n, D)
        return _pad(x, n, 0).reshape(b, n, hkv, r, d).transpose(0, 2, 3, 1, 4)

    q_t, g_t, o_t = heads(q, nq * bq), heads(g, nq * bq), heads(out, nq * bq)
    delta = jnp.einsum("bkrqd,bkrqd->bkrq", g_t.astype(jnp.float32), o_t.astype(jnp.float32))
    lse = lse.transpose(1, 2, 3, 0, 4).reshape(b, hkv, r, nq * bq)
    k_t = _pad(k, nk * bk, 0).transpose(0, 2, 1, 3)  # (b, Hkv, Tk, D)
    v_t = _pad(v, nk * bk, 0).transpose(0, 2, 1, 3)
    f32 = partial(jnp.einsum, preferred_element_type=jnp.float32)

    def kv_block(dq, j):
        kb = jax.lax.dynamic_slice_in_dim(k_t, j * bk, bk, axis=2).astype(q.dtype)
        vb = jax.lax.dynamic_slice_in_dim(v_t, j * bk, bk, axis=2).astype(g.dtype)
        kp, ks = _slice(kp_pad, j * bk, bk), _slice(ks_pad, j * bk, bk)

        def body(i, carry):
            dk, dv, dq = carry
            qb = jax.lax.dynamic_slice_in_dim(q_t, i * bq, bq, axis=3)
            gb = jax.lax.dynamic_slice_in_dim(g_t, i * bq, bq, axis=3)
            lse_b = jax.lax.dynamic_slice_in_dim(lse, i * bq, bq, axis=3)
            delta_b = jax.lax.dynamic_slice_in_dim(delta, i * bq, bq, axis=3)
            s = f32("bkrqd,bksd->bkrqs", qb, kb) * scale

            def masked(s):
                qp, qs = _slice(qp_pad, i * bq, bq), _slice(qs_pad, i * bq, bq)
                mask = _visible(qp, qs, kp, ks, meta.window)[:, None, None]
                return jnp.where(mask, jnp.exp(jnp.where(mask, s, _NEG) - lse_b[..., None]), 0.0)

            p = jax.lax.cond(full[i, j], lambda s: jnp.exp(s - lse_b[..., None]), masked, s)
            dv = dv + f32("bkrqs,bkrqd->bksd", p.astype(gb.dtype), gb)
            dp = f32("bkrqd,bksd->bkrqs", gb, vb)
            ds = (p * (dp - delta_b[..., None]) * scale).astype(q.dtype)
            dk = dk + f32("bkrqs,bkrqd->bksd", ds, qb)
            dq_b = jax.lax.dynamic_slice_in_dim(dq, i * bq, bq, axis=3)
            dq_b = dq_b + f32("bkrqs,bksd->bkrqd", ds, kb)
            return dk, dv, jax.lax.dynamic_update_slice_in_dim(dq, dq_b, i * bq, axis=3)

        zeros = jnp.zeros((b, hkv, bk, d), jnp.float32)
        dk, dv, dq = jax.lax.fori_loop(lo[j], hi[j], body, (zeros, zeros, dq))
        return dq, (dk, dv)

    dq0 = jnp.zeros((b, hkv, r, nq * bq, d), jnp.float32)
    dq, (dk, dv) = jax.lax.scan(kv_block, dq0, jnp.arange(nk))

    def unblock(x):  # (nk, b, hkv, bk, d) -> (b, tk, hkv, d)
        return x.transpose(1, 0, 3, 2, 4).reshape(b, nk * bk, hkv, d)[:, : meta.tk]

    dq = dq.transpose(0, 3, 1, 2, 4).reshape(b, nq * bq, hq, d)[:, :tq].astype(q.dtype)
    return dq, unblock(dk).astype(k.dtype), unblock(dv).astype(v.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(7,))
def _attend(q, k, v, q_pos, k_pos, q_seg, k_seg, meta):
    return _forward(q, k, v, q_pos, k_pos, q_seg, k_seg, meta)[0]


def _attend_fwd(q, k, v, q_pos, k_pos, q_seg, k_seg, meta):
    out, lse = _forward(q, k, v, q_pos, k_pos, q_seg, k_seg, meta)
    return out, (q, k, v, q_pos, k_pos, q_seg, k_seg, out, lse)


def _attend_bwd(meta, res, g):
    q, k, v, q_pos, k_pos, q_seg, k_seg, out, lse = res
    dq, dk, dv = _backward(q, k, v, q_pos, k_pos, q_seg, k_seg, out, lse, g, meta)
    return dq, dk, dv, None, None, None, None


_attend.defvjp(_attend_fwd, _attend_bwd)


def blockwise_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    q_pos: jax.Array,
    k_pos: jax.Array,
    q_seq_idx: jax.Array | None = None,
    k_seq_idx: jax.Array | None = None,
    window: int | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    skip: bool = True,
) -> jax.Array:
    """Causal GQA attention, blockwise. q (b, Tq, Hq, D); k, v (b, Tk, Hkv, D) (any dtype;
    cast to q's per block); q_pos (b, Tq), k_pos (b, Tk) int, a key with k_pos < 0 is never
    attended; optional document ids (b, Tq) / (b, Tk). Returns (b, Tq, Hq, D) in q's dtype.
    Differentiable in q, k, v. Blocks default to the module's :data:`BLOCK_Q` /
    :data:`BLOCK_K` (read at call time). ``skip=False`` visits every block pair (for benchmarks)."""
    tq, tk = q.shape[1], k.shape[1]
    block_q, block_k = block_q or BLOCK_Q, block_k or BLOCK_K
    meta = _Meta(window, min(block_q, tq), min(block_k, tk), tq, tk, skip)
    q_pos, k_pos = q_pos.astype(jnp.int32), k_pos.astype(jnp.int32)
    if q_seq_idx is None or k_seq_idx is None:
        q_seq_idx, k_seq_idx = jnp.zeros_like(q_pos), jnp.zeros_like(k_pos)
    q_seg, k_seg = q_seq_idx.astype(jnp.int32), k_seq_idx.astype(jnp.int32)
    return _attend(q, k, v, q_pos, k_pos, q_seg, k_seg, meta)
