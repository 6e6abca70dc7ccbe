"""Sliding-window attention against a direct numpy reference: the mask, the attention op,
and the attention block (RoPE, GQA) with sequences longer than the window."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.config import AttentionConfig, RopeConfig
from jaxprune.nn.attention import Attention
from jaxprune.ops.attention import causal_mask, gqa_attention
from jaxprune.testing.estimators import attention as np_attention
from jaxprune.testing.estimators import flat_params


def _np_window_attention(q, k, v, q_pos, k_pos, window):
    """softmax(q k^T / sqrt(D)) v over keys with q_pos - window < k_pos <= q_pos."""
    r = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, r, axis=2), np.repeat(v, r, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    dist = q_pos[:, None, :, None] - k_pos[:, None, None, :]
    allowed = (dist >= 0) & (dist < window)
    s = np.where(allowed, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = np.where(allowed, p, 0.0)
    return np.einsum("bhqk,bkhd->bqhd", p / p.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("window", [1, 3, 20])
def test_window_mask_is_the_last_w_keys_including_self(window):
    q_pos = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [5, 6, 7, 8, 9, 10, 11, 12]])
    k_pos = q_pos.copy()
    got = np.asarray(causal_mask(jnp.asarray(q_pos), jnp.asarray(k_pos), window=window))
    dist = q_pos[:, :, None] - k_pos[:, None, :]
    np.testing.assert_array_equal(got, (dist >= 0) & (dist < window))
    assert got.sum(-1).max() == min(window, 8)


@pytest.mark.parametrize("window", [2, 4])
def test_windowed_gqa_matches_numpy(window):
    rng = np.random.default_rng(3)
    b, tq, tk, hq, hkv, d = 2, 5, 9, 6, 2, 4
    q, k, v = (
        rng.normal(size=(b, tq, hq, d)),
        rng.normal(size=(b, tk, hkv, d)),
        rng.normal(size=(b, tk, hkv, d)),
    )
    k_pos = np.tile(np.arange(tk), (b, 1))
    q_pos = k_pos[:, -tq:]  # the last tq queries of a 9-token sequence (decode-like)
    mask = causal_mask(jnp.asarray(q_pos), jnp.asarray(k_pos), window=window)
    got = gqa_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), mask)
    want = _np_window_attention(q, k, v, q_pos, k_pos, window)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    full = _np_window_attention(q, k, v, q_pos, k_pos, tk)
    assert np.abs(want - full).max() > 1e-2  # the window matters here


@pytest.mark.parametrize("window", [3, 5])
def test_attention_block_with_window_matches_numpy(window):
    cfg = AttentionConfig(
        num_heads=4,
        num_kv_heads=2,
        head_dim=6,
        rope=RopeConfig(theta=100.0, rotary_dim=4),
        qkv_bias=True,
        sliding_window=window,
    )
    layer = Attention(cfg, 12, init_std=0.3, rngs=nnx.Rngs(1))
    x = np.random.default_rng(0).normal(size=(2, 11, 12))
    pos = jnp.broadcast_to(jnp.arange(11), (2, 11))
    got, _ = jax.jit(lambda m, x: m(x, positions=pos))(layer, jnp.asarray(x, jnp.float32))
    params = flat_params(layer)
    want, _ = np_attention(cfg, params, x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    unwindowed, _ = np_attention(dataclasses.replace(cfg, sliding_window=None), params, x)
    assert np.abs(want[:, window:] - unwindowed[:, window:]).max() > 1e-3
    np.testing.assert_allclose(want[:, :window], unwindowed[:, :window], rtol=1e-10)
