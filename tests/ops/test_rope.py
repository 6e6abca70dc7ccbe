import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.config import RopeConfig
from jaxprune.ops.rope import apply_rope, rope_inv_freq


def _rotate_half_reference(x, pos, inv):
    """HF's rotate-half RoPE on the first 2*len(inv) dims, in float64 numpy."""
    rd = 2 * len(inv)
    ang = pos[..., None] * inv
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, :, None]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, :, None]
    xr = x[..., :rd]
    rot = np.concatenate([-xr[..., rd // 2 :], xr[..., : rd // 2]], -1)
    return np.concatenate([xr * cos + rot * sin, x[..., rd:]], -1)


@pytest.mark.parametrize("rotary_dim", [None, 4])
def test_rope_matches_rotate_half_reference(rotary_dim):
    cfg = RopeConfig(theta=1000.0, rotary_dim=rotary_dim)
    inv = rope_inv_freq(cfg, 10)
    x = np.random.default_rng(0).normal(size=(2, 7, 3, 10))
    pos = np.tile(np.arange(7) + 3, (2, 1))
    got = apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(pos), inv)
    np.testing.assert_allclose(got, _rotate_half_reference(x, pos, inv), rtol=1e-5, atol=1e-5)
    if rotary_dim:
        np.testing.assert_array_equal(np.asarray(got)[..., 4:], x[..., 4:].astype(np.float32))


def test_rope_scores_depend_only_on_relative_position():
    inv = rope_inv_freq(RopeConfig(), 8)
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32) for _ in range(2))

    def score(pq, pk):
        qq = apply_rope(q, jnp.array([[pq]]), inv)
        kk = apply_rope(k, jnp.array([[pk]]), inv)
        return float(jnp.sum(qq * kk))

    assert score(5, 2) == pytest.approx(score(103, 100), rel=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), rel=1e-3)


def test_llama3_scaling_follows_the_three_bands():
    cfg = RopeConfig(
        theta=500000.0,
        scaling="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position=8192,
    )
    base = rope_inv_freq(RopeConfig(theta=500000.0), 128)
    got = rope_inv_freq(cfg, 128)
    wavelen = 2 * math.pi / base
    high = wavelen < 8192 / 4
    low = wavelen > 8192 / 1
    np.testing.assert_allclose(got[high], base[high])
    np.testing.assert_allclose(got[low], base[low] / 8)
    mid = ~(high | low)
    assert mid.any()
    assert np.all((got[mid] < base[mid]) & (got[mid] > base[mid] / 8))
