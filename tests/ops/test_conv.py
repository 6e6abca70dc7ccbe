import jax.numpy as jnp
import numpy as np

from jaxprune.ops.conv import causal_conv1d


def _conv_reference(x, w, b):
    k = w.shape[0]
    xp = np.concatenate([np.zeros((x.shape[0], k - 1, x.shape[2])), x], 1)
    return np.stack([(xp[:, t : t + k] * w).sum(1) for t in range(x.shape[1])], 1) + b


def test_causal_conv_matches_loop_and_continues_from_state():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, 9, 5)), rng.normal(size=(4, 5)), rng.normal(size=(5,))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    y, state = causal_conv1d(f32(x), f32(w), f32(b))
    np.testing.assert_allclose(y, _conv_reference(x, w, b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, x[:, -3:], rtol=1e-6)
    y1, s1 = causal_conv1d(f32(x[:, :4]), f32(w), f32(b))
    y2, s2 = causal_conv1d(f32(x[:, 4:]), f32(w), f32(b), state=s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s2, state)


def test_seq_idx_restarts_the_convolution_per_document():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(1, 8, 3)), rng.normal(size=(3, 3))
    seq = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]])
    y, _ = causal_conv1d(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), seq_idx=seq)
    np.testing.assert_allclose(y[:, :3], _conv_reference(x[:, :3], w, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[:, 3:], _conv_reference(x[:, 3:], w, 0), rtol=1e-5, atol=1e-6)
