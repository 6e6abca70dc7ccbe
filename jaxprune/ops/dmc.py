"""Dynamic Memory Compression math (arXiv 2403.09636), as pure functions.

Per KV head and token t a DMC block decides ``alpha_t``: append (0) a new cache slot, or
merge (1) into the last one, which then holds the ``omega``-weighted mean of the keys and
values merged into it (normaliser ``z``). Training runs the same computation in parallel over
the sequence: every position j keeps its partially merged state ``k~_j`` and a query i sees
``k~_i`` itself plus each earlier ``k~_j`` with additive bias ``log(1 - alpha_{j+1})``, 0 when
the next token appended (j's slot closed and stays in the cache), -inf when it merged (the
slot was overwritten). With hard decisions that mask is exactly the inference cache.

Shapes: b batch, T tokens, Hq / Hkv query / KV heads, r = Hq // Hkv, D head_dim, S slots.
Decisions, weights and the running sums are fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e30


def split_neuron(
    q: jax.Array, k: jax.Array, init_val: float
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Read the decision and importance from the last head dim, then zero it.

    q (b, T, Hq, D), k (b, T, Hkv, D) -> (q, k with dim D-1 zeroed, alpha logit (b, T, Hkv)
    = k[D-1] - c, omega (b, T, Hkv) = sigmoid(mean over the group's query heads of q[D-1]
    + c)), c = ``init_val``."""
    b, t, hq, _ = q.shape
    hkv = k.shape[2]
    logit = k[..., -1].astype(jnp.float32) - init_val
    qn = q[..., -1].astype(jnp.float32).reshape(b, t, hkv, hq // hkv).mean(-1)
    omega = jax.nn.sigmoid(qn + init_val) + jnp.finfo(jnp.float32).eps
    return zero_last(q), zero_last(k), logit, omega


def zero_last(x: jax.Array) -> jax.Array:
    """``x`` with its last dim's last entry set to 0 (the repurposed neuron)."""
    return x.at[..., -1].set(0)


def relaxed_alpha(
    logit: jax.Array, key: jax.Array, temperature: float
) -> tuple[jax.Array, jax.Array]:
    """Gumbel-sigmoid decisions: u = (logit + logistic noise) / temperature -> (alpha =
    sigmoid(u), log(1 - alpha) = -softplus(u)), both computed stably in fp32."""
    u = (logit + jax.random.logistic(key, logit.shape, jnp.float32)) / temperature
    return jax.nn.sigmoid(u), -jax.nn.softplus(u)


def hard_alpha(logit: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inference decisions: alpha = 1[logit > 0] and its log(1 - alpha) (0 or -inf)."""
    merge = logit > 0
    return merge.astype(jnp.float32), jnp.where(merge, _NEG, 0.0)


def force_append(
    alpha: jax.Array, log1m: jax.Array, starts: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """alpha (b, T, Hkv) = 0 (and log(1 - alpha) = 0) wherever ``starts`` (b, T) is True: a
    sequence's or document's first token always opens a slot."""
    s = starts[..., None]
    return jnp.where(s, 0.0, alpha), jnp.where(s, 0.0, log1m)


def segment_starts(positions: jax.Array, seq_idx: jax.Array | None = None) -> jax.Array:
    """(b, T) bool: the first token of each row (position 0) and of each packed document."""
    starts = positions == 0
    starts = starts.at[:, 0].set(True)
    if seq_idx is not None:
        change = jnp.concatenate(
            [jnp.ones_like(seq_idx[:, :1], bool), seq_idx[:, 1:] != seq_idx[:, :-1]], axis=1
        )
        starts |= change
    return starts


def accumulate(alpha: jax.Array, omega: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The running merge, unnormalised: s_t = alpha_t s_{t-1} + omega_t [k_t | v_t | 1].

    alpha, omega (b, T, Hkv); k, v (b, T, Hkv, D) -> sums (b, T, Hkv, 2D + 1) fp32, whose
    last entry is z_t; ``sums[..., :D] / z`` is the merged key k~_t (see :func:`normalise`).
    A linear recurrence, so one ``associative_scan`` over T."""
    x = jnp.concatenate(
        [k.astype(jnp.float32), v.astype(jnp.float32), jnp.ones_like(omega)[..., None]], -1
    )
    a, bx = alpha[..., None], omega[..., None] * x

    def combine(left, right):
        a1, b1 = left
        a2, b2 = right
        return a1 * a2, a2 * b1 + b2

    return jax.lax.associative_scan(combine, (a, bx), axis=1)[1]


def normalise(sums: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """sums (..., 2D + 1) -> merged key and value (..., D) in ``dtype``."""
    d = (sums.shape[-1] - 1) // 2
    z = sums[..., -1:]
    return (sums[..., :d] / z).astype(dtype), (sums[..., d : 2 * d] / z).astype(dtype)


def key_bias(log1m: jax.Array) -> jax.Array:
    """log(1 - alpha) (b, T, Hkv) -> the bias m_j = log(1 - alpha_{j+1}) that every later
    query adds to key j (the last key: 0)."""
    return jnp.concatenate([log1m[:, 1:], jnp.zeros_like(log1m[:, :1])], axis=1)


def dmc_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array,
    *,
    positions: jax.Array,
    seq_idx: jax.Array | None = None,
) -> jax.Array:
    """The training / prefill form: query i attends to key i and to each key j < i with
    additive bias ``bias[j]`` (b, T, Hkv); causal, within the document, keys with negative
    position (left padding) never seen. q (b, T, Hq, D); k, v (b, T, Hkv, D) the merged
    states, RoPE applied. Returns (b, T, Hq, D) in q's dtype (zeros for a padding query)."""
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, hq // hkv, d)
    scores = jnp.einsum(
        "bqkrd,bskd->bkrqs", qg, k.astype(q.dtype), preferred_element_type=jnp.float32
    )
    idx = jnp.arange(t)
    earlier = idx[None, :] < idx[:, None]  # (Tq, Tk): j < i
    visible = (idx[None, :] <= idx[:, None])[None] & (positions >= 0)[:, None, :]
    if seq_idx is not None:
        visible &= seq_idx[:, :, None] == seq_idx[:, None, :]
    m = jnp.where(earlier[None, None], bias.transpose(0, 2, 1)[:, :, None, :], 0.0)
    scores = scores * (d**-0.5) + m[:, :, None]
    vis = visible[:, None, None]
    probs = jax.nn.softmax(jnp.where(vis, scores, _NEG), axis=-1)
    probs = jnp.where(vis, probs, 0.0)
    out = jnp.einsum("bkrqs,bskd->bqkrd", probs.astype(q.dtype), v.astype(q.dtype))
    return out.reshape(b, t, hq, d)


def prefill_layout(alpha: jax.Array, real: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Where a prompt's tokens land in the cache, from hard alpha (b, T, Hkv) and ``real``
    (b, T) (False: left padding). Returns the slot of each token (b, T, Hkv), or -1 where the
    token's state is not kept (padding, or merged over by the next token), and the number of
    slots used (b, Hkv) int32."""
    app = real[..., None] & (alpha == 0)
    slot = jnp.cumsum(app, axis=1, dtype=jnp.int32) - 1
    nxt = jnp.concatenate([app[:, 1:], jnp.ones_like(app[:, :1])], axis=1)
    kept = real[..., None] & nxt
    return jnp.where(kept, slot, -1), jnp.sum(app, axis=1, dtype=jnp.int32)


def scatter_slots(x: jax.Array, slot: jax.Array, size: int) -> jax.Array:
    """x (b, T, Hkv, D) written at ``slot`` (b, T, Hkv) of a zero (b, size, Hkv, D) buffer;
    slot -1 (or >= size) is dropped. Kept slots of a row and head are distinct."""
    b, t, h, _ = x.shape
    bi = jnp.arange(b)[:, None, None]
    hi = jnp.arange(h)[None, None, :]
    idx = jnp.where(slot < 0, size, slot)
    out = jnp.zeros((b, size, h, x.shape[-1]), x.dtype)
    return out.at[bi, idx, hi].set(x, mode="drop")


def decode_decision(
    logit: jax.Array, length: jax.Array, capacity: int, real: jax.Array
) -> jax.Array:
    """One decode token's merge flag (b, Hkv) bool: its hard decision, never into an empty
    cache, always once the ``capacity`` slots are full; padding (``real`` (b,) False) takes
    no action (see :func:`decode_update`)."""
    merge = ((logit > 0) & (length > 0)) | (length >= capacity)
    return merge & real[:, None]


def decode_update(
    sums: jax.Array,
    length: jax.Array,
    merge: jax.Array,
    omega: jax.Array,
    k: jax.Array,
    v: jax.Array,
    real: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Alg. 1 for one token. sums (b, Hkv, 2D + 1) fp32 of the open slot; length (b, Hkv);
    merge, omega (b, Hkv); k (pre-RoPE), v (b, Hkv, D); real (b,) bool (False: padding,
    nothing changes). Returns (new sums, the slot written (b, Hkv), new length)."""
    x = jnp.concatenate(
        [k.astype(jnp.float32), v.astype(jnp.float32), jnp.ones_like(omega)[..., None]], -1
    )
    new = jnp.where(merge[..., None], sums, 0.0) + omega[..., None] * x
    r = real[:, None]
    sums = jnp.where(r[..., None], new, sums)
    slot = jnp.where(merge, length - 1, length)
    return sums, jnp.where(r, slot, -1), length + (r & ~merge).astype(length.dtype)


def write_slot(buf: jax.Array, x: jax.Array, slot: jax.Array) -> jax.Array:
    """buf (b, S, Hkv, D) with x (b, Hkv, D) at ``slot`` (b, Hkv) (-1: unchanged). A
    scatter, which XLA does in place on a donated cache (no copy of the buffer)."""
    b, size, h, _ = buf.shape
    bi = jnp.arange(b)[:, None]
    hi = jnp.arange(h)[None, :]
    idx = jnp.where(slot < 0, size, slot)
    return buf.at[bi, idx, hi].set(x.astype(buf.dtype), mode="drop")


def cache_attention(q: jax.Array, k: jax.Array, v: jax.Array, length: jax.Array) -> jax.Array:
    """A decode query over a per-head variable-length cache: q (b, Tq, Hq, D); k, v
    (b, S, Hkv, D) whose first ``length`` (b, Hkv) slots are valid. -> (b, Tq, Hq, D)."""
    b, tq, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, tq, hkv, hq // hkv, d)
    scores = jnp.einsum(
        "bqkrd,bskd->bkrqs", qg, k.astype(q.dtype), preferred_element_type=jnp.float32
    )
    valid = (jnp.arange(k.shape[1])[None, None, :] < length[..., None])[:, :, None, None]
    probs = jax.nn.softmax(jnp.where(valid, scores * (d**-0.5), _NEG), axis=-1)
    probs = jnp.where(valid, probs, 0.0)
    out = jnp.einsum("bkrqs,bskd->bqkrd", probs.astype(q.dtype), v.astype(q.dtype))
    return out.reshape(b, tq, hq, d)


def ratio_target(step: jax.Array, steps: int, target: float, ramp_fraction: float) -> jax.Array:
    """The scheduled compression ratio: 1 -> ``target`` linearly over the first
    ``ramp_fraction`` of ``steps``, then held (the paper's retrofit, then fine-tune)."""
    ramp = jnp.maximum(ramp_fraction * steps, 1.0)
    return 1.0 + (target - 1.0) * jnp.minimum(1.0, step.astype(jnp.float32) / ramp)


def ratio_loss(mean_alpha: jax.Array, ratio: jax.Array) -> jax.Array:
    """The one-sided compression loss (eq. 10): max(0, (1 - 1/ratio) - mean alpha), i.e.
    max(0, slots/tokens - 1/ratio): zero once the cache is at least ``ratio`` x smaller."""
    return jnp.maximum(0.0, (1.0 - 1.0 / ratio) - mean_alpha)
