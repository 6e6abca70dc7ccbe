"""Decode caches as pytrees: a KV cache per attention block, conv + SSM state per Mamba2 block."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """k, v: (b, max_len, kv_heads, head_dim), filled up to ``Cache.pos``."""

    k: jax.Array
    v: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DMCCache:
    """A DMC block's compressed cache: every (row, KV head) has its own length.

    k, v: (b, S, kv_heads, head_dim), slot j < ``length`` valid (keys with RoPE applied at
    the newest position merged into them); length: (b, kv_heads) int32 slots used; sums:
    (b, kv_heads, 2 head_dim + 1) fp32, the open (last) slot's unnormalised pre-RoPE key
    sum, value sum and weight z, which a merge adds to."""

    k: jax.Array
    v: jax.Array
    length: jax.Array
    sums: jax.Array

    def used_bytes(self) -> int:
        """Bytes the valid slots hold, summed over rows and heads (what a paged cache would
        allocate; host-side, not traceable)."""
        per_slot = 2 * self.k.shape[-1] * self.k.dtype.itemsize
        return int(np.asarray(self.length, np.int64).sum()) * per_slot


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class MambaCache:
    """conv: (b, K-1, conv_dim), the last K-1 conv inputs; ssm: (b, H, P, N) fp32 state."""

    conv: jax.Array
    ssm: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Cache:
    """One entry per block (None for MLP / MoE blocks) and ``pos``: tokens seen so far.

    ``offset`` (b,) int32, optional: the number of left-padding tokens of each row. Slot
    ``j`` of a row holds its real token ``j - offset`` (RoPE position); slots before
    ``offset`` are padding that no later token sees. None means no padding.
    """

    layers: tuple[KVCache | DMCCache | MambaCache | None, ...]
    pos: jax.Array
    offset: jax.Array | None = None

    def fit_dmc(self, room: int, multiple: int = 64) -> Cache:
        """This cache with each DMC block's buffers cut to the slots used so far plus
        ``room`` (rounded up to ``multiple``, never past their size): after a prefill,
        ``room`` = the tokens still to decode keeps every later decision exact (a full
        buffer would force merges). Host-side: it reads the lengths."""
        layers = []
        for c in self.layers:
            if isinstance(c, DMCCache):
                used = int(np.asarray(c.length).max(initial=0))
                cap = min(c.k.shape[1], -(-(used + room) // multiple) * multiple)
                c = DMCCache(c.k[:, :cap], c.v[:, :cap], c.length, c.sums)
            layers.append(c)
        return dataclasses.replace(self, layers=tuple(layers))

    def nbytes(self) -> dict[str, int]:
        """Bytes held per cache kind: ``{"kv": ..., "ssm": ..., "conv": ...}`` (a DMC cache
        counts its allocated buffers under "kv"; see :meth:`DMCCache.used_bytes`)."""
        out = {"kv": 0, "ssm": 0, "conv": 0}
        for c in self.layers:
            if isinstance(c, KVCache | DMCCache):
                out["kv"] += c.k.nbytes + c.v.nbytes
            elif isinstance(c, MambaCache):
                out["ssm"] += c.ssm.nbytes
                out["conv"] += c.conv.nbytes
        return out
