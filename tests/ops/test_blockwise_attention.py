"""The blockwise attention kernel against the reference (mask + gqa_attention): values and
gradients in q, k, v over GQA ratios, lengths that are not a multiple of the block, sliding
windows, documents, left padding and queries against a longer cache; the "auto" selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.errors import UserError
from jaxprune.ops.attention import BLOCKWISE_MIN_TK, dot_product_attention, select_impl
from jaxprune.ops.blockwise_attention import _full, _Meta, blockwise_attention

D = 8


def _inputs(seed, b, tq, tk, hq, hkv):
    ks = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(ks[0], (b, tq, hq, D), jnp.float32)
    k = jax.random.normal(ks[1], (b, tk, hkv, D), jnp.float32)
    v = jax.random.normal(ks[2], (b, tk, hkv, D), jnp.float32)
    return q, k, v


def _pair(q_pos, k_pos, q_seg=None, k_seg=None, window=None, bq=8, bk=16):
    kw = dict(q_pos=q_pos, k_pos=k_pos, q_seq_idx=q_seg, k_seq_idx=k_seg, window=window)

    def ref(q, k, v):
        return dot_product_attention(q, k, v, impl="reference", **kw)

    def blk(q, k, v):
        return blockwise_attention(q, k, v, block_q=bq, block_k=bk, **kw)

    return ref, blk


def _check(ref, blk, q, k, v):
    np.testing.assert_allclose(jax.jit(blk)(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-5)

    def loss(f):  # a non-linear loss so that every output element gets its own cotangent
        return lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)) * f(q, k, v))

    g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1, 2)))(q, k, v)
    g_blk = jax.jit(jax.grad(loss(blk), argnums=(0, 1, 2)))(q, k, v)
    for name, a, b in zip("qkv", g_blk, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


def _arange(b, t, offset=None):
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    return pos if offset is None else pos - jnp.asarray(offset, jnp.int32)[:, None]


@pytest.mark.parametrize("hq,hkv,t", [(2, 2, 37), (4, 2, 16), (4, 2, 37), (4, 1, 37)])
def test_causal_gqa_values_and_grads(hq, hkv, t):
    q, k, v = _inputs(t + hq + hkv, 2, t, t, hq, hkv)
    pos = _arange(2, t)
    _check(*_pair(pos, pos), q, k, v)


@pytest.mark.parametrize("window", [1, 5])
def test_sliding_window(window):
    q, k, v = _inputs(1, 2, 45, 45, 4, 2)
    pos = _arange(2, 45)
    _check(*_pair(pos, pos, window=window), q, k, v)


def test_documents_and_window():
    q, k, v = _inputs(2, 2, 40, 40, 4, 2)
    seg = jnp.asarray([[0] * 11 + [1] * 20 + [2] * 9, [0] * 3 + [1] * 37], jnp.int32)
    pos = _arange(2, 40)
    _check(*_pair(pos, pos, seg, seg), q, k, v)
    _check(*_pair(pos, pos, seg, seg, window=6), q, k, v)


def test_left_padding_rows_without_keys_are_zero():
    q, k, v = _inputs(3, 2, 30, 30, 4, 2)
    pos = _arange(2, 30, offset=[0, 13])
    ref, blk = _pair(pos, pos)
    _check(ref, blk, q, k, v)
    out = np.asarray(blk(q, k, v))
    assert np.all(out[1, :13] == 0) and np.all(np.abs(out[1, 13:]).sum(-1) > 0)


@pytest.mark.parametrize(
    "tq,pos0,window", [(1, 0, None), (1, 27, None), (1, 49, 4), (5, 20, None), (12, 0, 4)]
)
def test_queries_against_a_longer_cache(tq, pos0, window):
    """Decode / chunked prefill: Tq queries at slots pos0.. of a 50-slot cache whose later
    slots hold garbage, with left padding of 0 and 3."""
    b, s, offset = 2, 50, jnp.asarray([0, 3], jnp.int32)
    q, k, v = _inputs(tq + pos0, b, tq, s, 4, 2)
    q_pos = _arange(b, tq) + pos0 - offset[:, None]
    k_pos = _arange(b, s) - offset[:, None]
    _check(*_pair(q_pos, k_pos, window=window), q, k, v)


def test_cache_dtype_differs_from_queries():
    q, k, v = _inputs(5, 1, 3, 40, 4, 2)
    kb, vb = k.astype(jnp.bfloat16), v.astype(jnp.bfloat16)
    q_pos, k_pos = _arange(1, 3) + 30, _arange(1, 40)
    ref, blk = _pair(q_pos, k_pos)
    np.testing.assert_allclose(blk(q, kb, vb), ref(q, kb, vb), rtol=1e-5, atol=1e-5)


def test_skipping_changes_nothing_numerically():
    q, k, v = _inputs(6, 1, 64, 64, 4, 2)
    pos = _arange(1, 64)
    kw = dict(q_pos=pos, k_pos=pos, window=9, block_q=8, block_k=8)
    a = blockwise_attention(q, k, v, **kw)
    b = blockwise_attention(q, k, v, skip=False, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("window", [None, 33])
def test_entirely_visible_blocks_skip_the_mask_and_agree(window):
    """With 8 x 8 blocks the strictly lower block triangle (inside the window) is entirely
    visible and is computed without a mask: values and gradients still match; a block of
    another document, a left-padded block or the cache's overhanging last block is not."""
    q, k, v = _inputs(8, 2, 64, 64, 4, 2)
    pos = _arange(2, 64)
    _check(*_pair(pos, pos, window=window, bq=8, bk=8), q, k, v)
    full = np.asarray(_full(pos, jnp.zeros_like(pos), pos, jnp.zeros_like(pos),
                            _Meta(window, 8, 8, 64, 64)))  # fmt: skip
    i, j = np.indices(full.shape)
    expect = j < i if window is None else (j < i) & (8 * j > 8 * i + 7 - window)
    np.testing.assert_array_equal(full, expect)
    seg = jnp.asarray([[0] * 20 + [1] * 44] * 2, jnp.int32)
    padded = _arange(2, 64, offset=[0, 12])
    assert not np.asarray(_full(pos, seg, pos, seg, _Meta(None, 8, 8, 64, 64)))[3, 2]
    assert not np.asarray(_full(padded, seg * 0, padded, seg * 0, _Meta(None, 8, 8, 64, 64)))[4, 1]
    short = jnp.where(pos < 60, pos, -1)  # a 60-slot cache padded to whole blocks
    assert not np.asarray(_full(pos, seg * 0, short, seg * 0, _Meta(None, 8, 8, 64, 60)))[
        :, 7
    ].any()


def test_block_larger_than_sequence():
    q, k, v = _inputs(7, 1, 5, 5, 2, 1)
    pos = _arange(1, 5)
    _check(*_pair(pos, pos, bq=512, bk=512), q, k, v)


def _select(impl="auto", backend="cpu", dtype=jnp.float32, tq=4096, tk=4096, **kw):
    return select_impl(impl, backend=backend, dtype=dtype, tq=tq, tk=tk, head_dim=64, **kw)


def test_auto_selection():
    assert _select() == "blockwise"
    assert _select(tq=16, tk=16) == "reference"
    assert _select(tq=1, tk=BLOCKWISE_MIN_TK) == "blockwise"  # a decode step over a cache
    assert _select(backend="gpu", dtype=jnp.bfloat16) == "cudnn"
    assert _select(backend="gpu", dtype=jnp.float16, tq=8, tk=8) == "cudnn"
    assert _select(backend="gpu", dtype=jnp.float32) == "blockwise"
    assert _select(backend="gpu", dtype=jnp.bfloat16, tq=1) == "blockwise"
    assert _select(backend="gpu", dtype=jnp.bfloat16, segments=True) == "blockwise"
    assert _select(backend="tpu", dtype=jnp.bfloat16) == "blockwise"
    assert _select("reference") == "reference" and _select("blockwise", tk=8) == "blockwise"


def test_explicit_cudnn_refused_where_it_does_not_apply():
    with pytest.raises(UserError, match="GPU backend"):
        _select("cudnn", dtype=jnp.bfloat16)
    with pytest.raises(UserError, match="bfloat16/float16"):
        _select("cudnn", backend="gpu")
    with pytest.raises(UserError, match="must be one of"):
        _select("flash")
    q, k, v = _inputs(8, 1, 4, 4, 2, 1)
    with pytest.raises(UserError, match="cudnn"):
        dot_product_attention(q, k, v, q_pos=_arange(1, 4), k_pos=_arange(1, 4), impl="cudnn")
