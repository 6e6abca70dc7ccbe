import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.ops.norms import gated_rms_norm, rms_norm


def test_rms_norm_matches_numpy_and_keeps_dtype():
    x = np.random.default_rng(0).normal(size=(3, 5, 11)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(11,)).astype(np.float32)
    want = w * x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(rms_norm(jnp.asarray(x), jnp.asarray(w), 1e-5), want, rtol=1e-5)
    out = rms_norm(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w), 1e-5)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=2e-2, atol=2e-2)


def test_gated_norm_normalizes_each_group_after_the_gate():
    rng = np.random.default_rng(2)
    x, z = rng.normal(size=(2, 3, 2, 5)), rng.normal(size=(2, 3, 2, 5))
    w = rng.normal(size=(2, 5))
    g = x * z / (1 + np.exp(-z))
    want = w * g / np.sqrt(np.mean(g**2, -1, keepdims=True) + 1e-6)
    got = gated_rms_norm(*(jnp.asarray(a, jnp.float32) for a in (x, z, w)), 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # groups are independent: scaling one group's input leaves the other group unchanged
    x2 = x.copy()
    x2[..., 0, :] *= 7.0
    got2 = gated_rms_norm(*(jnp.asarray(a, jnp.float32) for a in (x2, z, w)), 1e-6)
    np.testing.assert_allclose(got2[..., 1, :], got[..., 1, :], rtol=1e-6)
    assert not np.allclose(got2[..., 0, :], got[..., 0, :])


def test_norm_gradients_are_finite_at_zero_input():
    g = jax.grad(lambda x: rms_norm(x, jnp.ones(4), 1e-5).sum())(jnp.zeros((2, 4)))
    assert np.isfinite(np.asarray(g)).all()
