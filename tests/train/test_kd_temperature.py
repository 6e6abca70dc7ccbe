"""Logit divergences at temperatures other than 1 against numpy, and the pinned decision on
the T^2 factor (none; see the jaxprune.train.losses docstring)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.train.config import LossConfig
from jaxprune.train.losses import combine_losses, cross_entropy, forward_kl, kd_loss, topk_kl

B, T, V = 2, 7, 11


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_topk_kl(s, t, k, temp):
    """KL(p_t^top-k || p_s) with p = softmax(logits / temp); the teacher's top k renormalized,
    the student's full log-softmax read at those k tokens."""
    idx = np.argsort(-t, -1, kind="stable")[..., :k]
    lt = _log_softmax(np.take_along_axis(t, idx, -1) / temp)
    ls = np.take_along_axis(_log_softmax(s / temp), idx, -1)
    return (np.exp(lt) * (lt - ls)).sum(-1)


@pytest.fixture
def logits():
    rng = np.random.default_rng(5)
    return 3 * rng.normal(size=(B, T, V)), 3 * rng.normal(size=(B, T, V))


@pytest.mark.parametrize("temp", [0.5, 2.5])
@pytest.mark.parametrize("k", [1, 4, V])
def test_topk_kl_at_a_temperature_matches_numpy(logits, temp, k):
    s, t = logits
    got = topk_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), k, temp)
    np.testing.assert_allclose(np.asarray(got), _np_topk_kl(s, t, k, temp), rtol=1e-4, atol=1e-6)
    if k == V:  # the whole vocabulary: plain forward KL at that temperature
        full = forward_kl(jnp.asarray(s), jnp.asarray(t), temp)
        np.testing.assert_allclose(np.asarray(got), np.asarray(full), rtol=1e-4, atol=1e-6)
    # the temperature matters: at T = 1 the value differs
    assert np.abs(_np_topk_kl(s, t, k, 1.0) - _np_topk_kl(s, t, k, temp)).max() > 1e-3


def test_masked_topk_kd_loss_at_a_temperature_matches_numpy(logits):
    s, t = logits
    mask = np.ones((B, T))
    mask[0, 4:] = 0
    got = kd_loss(
        jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask), kind="topk", temperature=2.0, top_k=3
    )
    want = (_np_topk_kl(s, t, 3, 2.0) * mask).sum() / mask.sum()
    assert float(got) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("temp", [0.5, 1.0, 3.0])
def test_kd_gradient_has_no_t_squared_factor(logits, temp):
    """d/ds KL(p_t^T || p_s^T) = (p_s^T - p_t^T) / T per token: what we minimize. Hinton's
    convention would give T * (p_s^T - p_t^T)."""
    s, t = logits
    mask = jnp.ones((B, T))
    g = jax.grad(lambda x: kd_loss(x, jnp.asarray(t), mask, temperature=temp))(jnp.asarray(s))
    ps, pt = np.exp(_log_softmax(s / temp)), np.exp(_log_softmax(t / temp))
    np.testing.assert_allclose(np.asarray(g), (ps - pt) / temp / (B * T), rtol=1e-4, atol=1e-7)


def test_kd_gradient_shrinks_like_one_over_t_squared_and_kd_weight_restores_it():
    """For logits small against T the gradient scales as 1/T^2 (why Hinton multiplies by
    T^2); kd_weight = T^2 restores a temperature-independent gradient."""
    rng = np.random.default_rng(1)
    s, t = 0.05 * rng.normal(size=(B, T, V)), 0.05 * rng.normal(size=(B, T, V))
    mask = jnp.ones((B, T))

    def grad_norm(temp, weight=1.0):
        cfg = LossConfig(kd_weight=weight, balance=False)

        def f(x):
            kl = kd_loss(x, jnp.asarray(t), mask, temperature=temp)
            return combine_losses(kl, jnp.zeros(()), None, cfg)

        return float(jnp.linalg.norm(jax.grad(f)(jnp.asarray(s))))

    g1 = grad_norm(1.0)
    for temp in (2.0, 4.0):
        assert grad_norm(temp) * temp**2 == pytest.approx(g1, rel=0.05)
        assert grad_norm(temp, weight=temp**2) == pytest.approx(g1, rel=0.05)


def test_dynamic_balancing_cancels_any_constant_kd_factor(logits):
    """With CE on and balance=True, scaling the KD term by a constant (e.g. T^2) changes
    neither the objective nor its gradient: the decision is moot there."""
    s, t = logits
    y = jnp.asarray(np.random.default_rng(2).integers(0, V, size=(B, T)))
    mask = jnp.ones((B, T))
    cfg = LossConfig(ce_weight=1.0, balance=True, temperature=2.0)

    def objective(x, factor):
        kl = factor * kd_loss(x, jnp.asarray(t), mask, temperature=2.0)
        ce = jnp.mean(cross_entropy(x, y))
        return combine_losses(kl, ce, None, cfg)

    x = jnp.asarray(s, jnp.float32)
    v1, g1 = jax.value_and_grad(objective)(x, 1.0)
    v4, g4 = jax.value_and_grad(objective)(x, 4.0)
    assert float(v1) == pytest.approx(float(v4), rel=1e-6)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g4), rtol=1e-5, atol=1e-8)
