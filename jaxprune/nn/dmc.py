"""The DMC form of an attention block: training / scoring, prefill and decode.

:class:`jaxprune.nn.attention.Attention` computes the projections (and q/k norm) and hands
them here when its config has ``dmc`` set; the math is in :mod:`jaxprune.ops.dmc`.

* No cache (training, scoring): all positions in parallel with the DMC attention bias;
  with a :class:`Relaxation`, Gumbel-sigmoid decisions (training), else hard ones.
* A cache and T > 1: prefill. The prompt runs the parallel hard form and its kept states are
  scattered into the cache in the same pass; the cache must be empty (``Cache.pos`` = 0).
* A cache and T = 1: a decode step that appends or merges (Alg. 1) and attends over each
  head's valid slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp

from jaxprune.config import DMCConfig
from jaxprune.nn.cache import DMCCache
from jaxprune.nn.taps import DMCDecisions, Tap
from jaxprune.ops import dmc as ops

Rope = Callable[[jax.Array, jax.Array], jax.Array]


@partial(jax.tree_util.register_dataclass, data_fields=["key"], meta_fields=["temperature"])
@dataclass(frozen=True)
class Relaxation:
    """Training-time decisions: Gumbel-sigmoid noise from ``key`` at ``temperature``."""

    key: jax.Array
    temperature: float = 0.1

    def at(self, block: int) -> Relaxation:
        """This relaxation's own noise stream for block ``block``."""
        return Relaxation(jax.random.fold_in(self.key, block), self.temperature)


def dmc_forward(
    cfg: DMCConfig,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    rope: Rope,
    *,
    positions: jax.Array,
    seq_idx: jax.Array | None = None,
    cache: DMCCache | None = None,
    relax: Relaxation | None = None,
    tap: Tap | None = None,
) -> tuple[jax.Array, DMCCache | None]:
    """q (b, T, Hq, D), k, v (b, T, Hkv, D): projections (q/k normed, no RoPE, the last
    dim not yet zeroed); ``rope(x, positions)`` rotates (b, T, H, D). Returns the attention
    output (b, T, Hq, D) and the updated cache. ``positions`` (b, T) are real token
    positions (negative: left padding); ``relax``: relaxed decisions (training, no cache)."""
    q, k, logit, omega = ops.split_neuron(q, k, cfg.init_val)
    real = positions >= 0
    if cache is not None and q.shape[1] == 1:
        return _decode(q, k, v, logit, omega, rope, positions, real, cache, tap)
    if relax is not None and cache is None:
        alpha, log1m = ops.relaxed_alpha(logit, relax.key, relax.temperature)
    else:
        alpha, log1m = ops.hard_alpha(logit)
    alpha, log1m = ops.force_append(alpha, log1m, ops.segment_starts(positions, seq_idx))
    if tap is not None:
        tap(DMCDecisions(alpha, real))
    sums = ops.accumulate(alpha, omega, k, v)
    km, vm = ops.normalise(sums, k.dtype)
    qr, kr = rope(q, positions), rope(km, positions)
    out = ops.dmc_attention(qr, kr, vm, ops.key_bias(log1m), positions=positions, seq_idx=seq_idx)
    if cache is None:
        return out, None
    slot, length = ops.prefill_layout(alpha, real)
    size = cache.k.shape[1]
    new = DMCCache(
        k=ops.scatter_slots(kr.astype(cache.k.dtype), slot, size),
        v=ops.scatter_slots(vm.astype(cache.v.dtype), slot, size),
        length=jnp.minimum(length, size),
        sums=sums[:, -1],
    )
    return out, new


def _decode(q, k, v, logit, omega, rope, positions, real, cache: DMCCache, tap):
    """One token (T = 1) against the compressed cache."""
    r = real[:, 0]
    merge = ops.decode_decision(logit[:, 0], cache.length, cache.k.shape[1], r)
    if tap is not None:
        tap(DMCDecisions(merge[:, None].astype(jnp.float32), real))
    sums, slot, length = ops.decode_update(
        cache.sums, cache.length, merge, omega[:, 0], k[:, 0], v[:, 0], r
    )
    km, vm = ops.normalise(sums, k.dtype)
    kr = rope(km[:, None], positions)[:, 0]
    kc = ops.write_slot(cache.k, kr, slot)
    vc = ops.write_slot(cache.v, vm, slot)
    qr = rope(q, positions)
    out = ops.cache_attention(qr, kc, vc, length)
    return out, DMCCache(kc, vc, length, sums)


def init_dmc_cache(batch: int, slots: int, kv_heads: int, head_dim: int, dtype) -> DMCCache:
    """An empty compressed cache of ``slots`` slots per (row, KV head)."""
    shape = (batch, slots, kv_heads, head_dim)
    return DMCCache(
        jnp.zeros(shape, dtype),
        jnp.zeros(shape, dtype),
        jnp.zeros((batch, kv_heads), jnp.int32),
        jnp.zeros((batch, kv_heads, 2 * head_dim + 1), jnp.float32),
    )
