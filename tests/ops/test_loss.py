"""token_nll: the one token cross-entropy, against a float64 log-softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.ops.loss import token_nll


def _np_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], -1)[..., 0]


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_token_nll_matches_log_softmax(offset):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(3, 7, 29)) * 4 + offset).astype(np.float32)
    targets = rng.integers(0, 29, size=(3, 7))
    got = np.asarray(token_nll(jnp.asarray(logits), jnp.asarray(targets)))
    assert got.shape == (3, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, _np_nll(logits, targets), rtol=1e-5, atol=1e-4)


def test_token_nll_is_fp32_for_bf16_logits():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.bfloat16)
    targets = jnp.asarray(rng.integers(0, 11, size=(2, 5)))
    got = token_nll(logits, targets)
    assert got.dtype == jnp.float32
    want = _np_nll(np.asarray(logits.astype(jnp.float32)), np.asarray(targets))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_token_nll_gradient_is_softmax_minus_onehot():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 9)).astype(np.float32)
    logits[0, :3] = logits[0].max() + 1.0  # a tie at the maximum
    targets = rng.integers(0, 9, size=(4,))
    grad = np.asarray(jax.grad(lambda x: jnp.sum(token_nll(x, jnp.asarray(targets))))(logits))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    want = p / p.sum(-1, keepdims=True) - np.eye(9)[targets]
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)
