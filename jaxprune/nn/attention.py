"""Attention block: GQA with optional RoPE, q/k norm (Qwen3) and qkv bias (Qwen2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.config import AttentionConfig
from jaxprune.nn.cache import DMCCache, KVCache
from jaxprune.nn.dmc import Relaxation, dmc_forward, init_dmc_cache
from jaxprune.nn.init import normal, ones, param, zeros
from jaxprune.nn.taps import HeadOutputs, Tap
from jaxprune.ops.attention import BLOCKWISE_MIN_TK, dot_product_attention
from jaxprune.ops.norms import rms_norm
from jaxprune.ops.rope import apply_rope, rope_inv_freq


def _cache_impl(impl: str, cache_len: int) -> str:
    """The implementation over a KV cache: cuDNN's index-causal mask knows neither the cache
    offset nor left padding, so "auto" / "cudnn" choose between blockwise and reference."""
    if impl not in ("auto", "cudnn"):
        return impl
    return "blockwise" if cache_len >= BLOCKWISE_MIN_TK else "reference"


class Attention(nnx.Module):
    """Causal self-attention. Kernels: q (d, Hq, D), k/v (d, Hkv, D), o (Hq, D, d)."""

    def __init__(
        self,
        cfg: AttentionConfig,
        hidden: int,
        *,
        dtype="float32",
        param_dtype="float32",
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.cfg = cfg
        self.dtype = jnp.dtype(dtype)
        hq, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        init = normal(init_std)
        self.q_proj = param(
            rngs, (hidden, hq, d), ("embed", "heads", "head_dim"), init, param_dtype
        )
        self.k_proj = param(
            rngs, (hidden, hkv, d), ("embed", "kv_heads", "head_dim"), init, param_dtype
        )
        self.v_proj = param(
            rngs, (hidden, hkv, d), ("embed", "kv_heads", "head_dim"), init, param_dtype
        )
        self.o_proj = param(
            rngs, (hq, d, hidden), ("heads", "head_dim", "embed"), init, param_dtype
        )
        if cfg.qkv_bias:
            self.q_bias = param(rngs, (hq, d), ("heads", "head_dim"), zeros, param_dtype)
            self.k_bias = param(rngs, (hkv, d), ("kv_heads", "head_dim"), zeros, param_dtype)
            self.v_bias = param(rngs, (hkv, d), ("kv_heads", "head_dim"), zeros, param_dtype)
        if cfg.out_bias:
            self.o_bias = param(rngs, (hidden,), ("embed",), zeros, param_dtype)
        if cfg.qk_norm:
            self.q_norm = param(rngs, (d,), ("head_dim",), ones, param_dtype)
            self.k_norm = param(rngs, (d,), ("head_dim",), ones, param_dtype)
        self.inv_freq = None if cfg.rope is None else tuple(rope_inv_freq(cfg.rope, d).tolist())

    def __call__(
        self,
        x: jax.Array,
        *,
        positions: jax.Array,
        seq_idx: jax.Array | None = None,
        cache: KVCache | None = None,
        pos: jax.Array | None = None,
        offset: jax.Array | None = None,
        relax: Relaxation | None = None,
        tap: Tap | None = None,
    ) -> tuple[jax.Array, KVCache | DMCCache | None]:
        """x (b, T, d); positions (b, T) int; ``seq_idx`` (b, T) int document ids (no query
        attends to another document). With ``cache`` the T new keys are written at
        ``pos`` and the queries attend to every cached key at or before their position;
        ``offset`` (b,) int marks the first ``offset[i]`` slots of row i as left padding,
        never attended (``positions`` are then the real positions, slot - offset).
        Returns (b, T, d) and the updated cache. ``tap`` sees :class:`HeadOutputs`, the
        o_proj input (b, T, Hq, head_dim). A DMC block (``cfg.dmc``) runs
        :func:`jaxprune.nn.dmc.dmc_forward` (``relax``: training-time relaxed decisions) with
        a :class:`DMCCache`."""
        cfg, dt = self.cfg, self.dtype
        x = x.astype(dt)
        q = jnp.einsum("btd,dhk->bthk", x, self.q_proj[...].astype(dt))
        k = jnp.einsum("btd,dhk->bthk", x, self.k_proj[...].astype(dt))
        v = jnp.einsum("btd,dhk->bthk", x, self.v_proj[...].astype(dt))
        if cfg.qkv_bias:
            q, k, v = (
                q + self.q_bias[...].astype(dt),
                k + self.k_bias[...].astype(dt),
                v + self.v_bias[...].astype(dt),
            )
        if cfg.qk_norm:
            q = rms_norm(q, self.q_norm[...], cfg.norm_eps)
            k = rms_norm(k, self.k_norm[...], cfg.norm_eps)
        if cfg.dmc is not None:
            out, cache = dmc_forward(
                cfg.dmc,
                q,
                k,
                v,
                self._rope,
                positions=positions,
                seq_idx=seq_idx,
                cache=cache,
                relax=relax,
                tap=tap,
            )
            return self._out(out, tap), cache
        q, k = self._rope(q, positions), self._rope(k, positions)
        w, impl = cfg.sliding_window, cfg.attn_impl
        if cache is None:
            out = dot_product_attention(
                q,
                k,
                v,
                q_pos=positions,
                k_pos=positions,
                q_seq_idx=seq_idx,
                k_seq_idx=seq_idx,
                window=w,
                impl=impl,
            )
        else:
            kc = jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), (0, pos, 0, 0))
            vc = jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), (0, pos, 0, 0))
            cache = KVCache(kc, vc)
            b, s = x.shape[0], kc.shape[1]
            k_pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
            if offset is not None:
                k_pos = k_pos - offset[:, None]
            # unfilled slots (>= pos + T) are later than every query: the blockwise kernel
            # skips their blocks, so a step costs O(filled cache), not O(max_len)
            out = dot_product_attention(
                q, kc, vc, q_pos=positions, k_pos=k_pos, window=w, impl=_cache_impl(impl, s)
            )
        return self._out(out, tap), cache

    def _rope(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        if self.inv_freq is None:
            return x
        return apply_rope(x, positions, jnp.asarray(self.inv_freq, jnp.float32))

    def _out(self, out: jax.Array, tap: Tap | None) -> jax.Array:
        """o_proj of the heads' outputs (b, T, Hq, D) -> (b, T, d)."""
        if tap is not None:
            tap(HeadOutputs(out))
        y = jnp.einsum("bthk,hkd->btd", out, self.o_proj[...].astype(self.dtype))
        if self.cfg.out_bias:
            y = y + self.o_bias[...].astype(self.dtype)
        return y

    def init_cache(self, batch: int, max_len: int, dtype) -> KVCache | DMCCache:
        """An empty cache for ``max_len`` tokens (a DMC block: ``max_len`` slots per head)."""
        c = self.cfg
        if c.dmc is not None:
            return init_dmc_cache(batch, max_len, c.num_kv_heads, c.head_dim, dtype)
        shape = (batch, max_len, c.num_kv_heads, c.head_dim)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
