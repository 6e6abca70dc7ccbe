"""Decode caches as pytrees: a KV cache per attention block, conv + SSM state per Mamba2 block."""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """k, v: (b, max_len, kv_heads, head_dim), filled up to ``Cache.pos``."""

    k: jax.Array
    v: jax.Array


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

    layers: tuple[KVCache | MambaCache | None, ...]
    pos: jax.Array
    offset: jax.Array | None = None

    def nbytes(self) -> dict[str, int]:
        """Bytes held per cache kind: ``{"kv": ..., "ssm": ..., "conv": ...}``."""
        out = {"kv": 0, "ssm": 0, "conv": 0}
        for c in self.layers:
            if isinstance(c, KVCache):
                out["kv"] += c.k.nbytes + c.v.nbytes
            elif isinstance(c, MambaCache):
                out["ssm"] += c.ssm.nbytes
                out["conv"] += c.conv.nbytes
        return out
