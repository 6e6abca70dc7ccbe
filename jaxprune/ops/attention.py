"""Causal grouped-query attention, optionally masked to documents (``seq_idx``); fp32 softmax.

:func:`dot_product_attention` is the entry point; it dispatches to the reference below, the
blockwise kernel or cuDNN."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.config import ATTN_IMPLS
from jaxprune.errors import UserError
from jaxprune.ops.blockwise_attention import blockwise_attention

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


#: Tk from which "auto" takes the blockwise kernel off-GPU (measured on CPU with
#: experiments/bench_attention.py: below it the one-shot reference is as fast or faster).
BLOCKWISE_MIN_TK = 256
_CUDNN_DTYPES = ("bfloat16", "float16")


def cudnn_unsupported(
    *, backend: str, dtype, tq: int, tk: int, head_dim: int, segments: bool
) -> str | None:
    """Why ``jax.nn.dot_product_attention(implementation="cudnn")`` does not apply, or None.

    The cuDNN path is used for self-attention only (Tq == Tk, positions increasing along
    the sequence, no document ids): its causal mask is on indices, not positions."""
    if backend not in ("gpu", "cuda"):
        return f"needs a GPU backend, not {backend!r}"
    if jnp.dtype(dtype).name not in _CUDNN_DTYPES:
        return f"needs bfloat16/float16 inputs, not {jnp.dtype(dtype).name}"
    if tq != tk:
        return f"needs Tq == Tk (self-attention), got {tq} and {tk}"
    if segments:
        return "does not take document ids (seq_idx)"
    if head_dim % 8 or head_dim > 128:
        return f"needs head_dim a multiple of 8 and <= 128, got {head_dim}"
    return None


def select_impl(
    impl: str, *, backend: str, dtype, tq: int, tk: int, head_dim: int, segments: bool = False
) -> str:
    """Resolve ``impl`` (one of :data:`jaxprune.config.ATTN_IMPLS`) for a call: "auto" is
    cuDNN where it applies, blockwise from :data:`BLOCKWISE_MIN_TK` keys, else the reference.
    An explicit "cudnn" that does not apply raises UserError."""
    if impl not in ATTN_IMPLS:
        raise UserError(f"attention impl must be one of {ATTN_IMPLS}, got {impl!r}")
    why = cudnn_unsupported(
        backend=backend, dtype=dtype, tq=tq, tk=tk, head_dim=head_dim, segments=segments
    )
    if impl == "cudnn" and why is not None:
        raise UserError(f"attention impl 'cudnn' {why}")
    if impl != "auto":
        return impl
    if why is None:
        return "cudnn"
    return "blockwise" if tk >= BLOCKWISE_MIN_TK else "reference"


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    q_pos: jax.Array,
    k_pos: jax.Array,
    q_seq_idx: jax.Array | None = None,
    k_seq_idx: jax.Array | None = None,
    window: int | None = None,
    impl: str = "auto",
) -> jax.Array:
    """Causal GQA attention: q (b, Tq, Hq, D); k, v (b, Tk, Hkv, D) (cast to q's dtype);
    q_pos (b, Tq), k_pos (b, Tk) int (a key with k_pos < 0 is padding, never attended);
    optional document ids; ``window`` W: only the W most recent positions. Returns
    (b, Tq, Hq, D) in q's dtype; a query with no visible key gives zeros.

    ``impl``: "reference" (mask + :func:`gqa_attention`, the oracle), "blockwise"
    (``jaxprune.ops.blockwise_attention``, memory linear in T, masked blocks skipped),
    "cudnn" (GPU, bf16/fp16, self-attention: see :func:`cudnn_unsupported`) or "auto"
    (:func:`select_impl`)."""
    segments = q_seq_idx is not None and k_seq_idx is not None
    impl = select_impl(
        impl,
        backend=jax.default_backend(),
        dtype=q.dtype,
        tq=q.shape[1],
        tk=k.shape[1],
        head_dim=q.shape[-1],
        segments=segments,
    )
    if impl == "blockwise":
        return blockwise_attention(
            q,
            k,
            v,
            q_pos=q_pos,
            k_pos=k_pos,
            q_seq_idx=q_seq_idx,
            k_seq_idx=k_seq_idx,
            window=window,
        )
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    if impl == "cudnn":
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            local_window_size=None if window is None else (window - 1, 0),
            implementation="cudnn",
        )
    mask = causal_mask(q_pos, k_pos, q_seq_idx if segments else None, k_seq_idx, window)
    return gqa_attention(q, k, v, mask & (k_pos >= 0)[:, None, :])
