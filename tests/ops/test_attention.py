import jax.numpy as jnp
import numpy as np

from jaxprune.ops.attention import causal_mask, gqa_attention


def _mha_reference(q, k, v, mask):
    r = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, r, axis=2), np.repeat(v, r, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    s = np.where(mask[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def test_gqa_equals_mha_with_repeated_kv_heads():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 7, 6, 5))
    k, v = rng.normal(size=(2, 7, 2, 5)), rng.normal(size=(2, 7, 2, 5))
    pos = np.tile(np.arange(7), (2, 1))
    mask = np.asarray(causal_mask(jnp.asarray(pos), jnp.asarray(pos)))
    got = gqa_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), jnp.asarray(mask))
    np.testing.assert_allclose(got, _mha_reference(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_segment_mask_blocks_cross_document_attention():
    pos = jnp.arange(6)[None]
    seg = jnp.array([[0, 0, 0, 1, 1, 1]])
    mask = np.asarray(causal_mask(pos, pos, seg, seg))[0]
    assert mask[4, 3] and mask[4, 4] and not mask[4, 2] and not mask[2, 3]
    assert mask[2, 0] and not mask[0, 2]
