import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.train.config import LossConfig
from jaxprune.train.losses import (
    chunked_logit_losses,
    combine_losses,
    cross_entropy,
    forward_kl,
    intermediate_loss,
    kd_loss,
    reverse_kl,
    topk_kl,
)

B, T, D, V = 2, 11, 5, 13


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture
def logits():
    k1, k2 = jax.random.split(jax.random.key(0))
    return 3 * jax.random.normal(k1, (B, T, V)), 3 * jax.random.normal(k2, (B, T, V))


def test_forward_and_reverse_kl_match_numpy(logits):
    s, t = (np.asarray(x, np.float64) for x in logits)
    ls, lt = _np_log_softmax(s / 2.0), _np_log_softmax(t / 2.0)
    fwd = (np.exp(lt) * (lt - ls)).sum(-1)
    rev = (np.exp(ls) * (ls - lt)).sum(-1)
    np.testing.assert_allclose(forward_kl(*logits, temperature=2.0), fwd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(reverse_kl(*logits, temperature=2.0), rev, rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(forward_kl(logits[0], logits[0])))) < 1e-5


def test_topk_kl_is_kl_against_the_truncated_renormalized_teacher(logits):
    s, t = logits
    np.testing.assert_allclose(topk_kl(s, t, V), forward_kl(s, t), rtol=1e-5, atol=1e-6)
    k = 4
    s64, t64 = np.asarray(s, np.float64), np.asarray(t, np.float64)
    top = np.argsort(-t64, -1)[..., :k]
    pt = np.zeros_like(t64)
    vals = np.take_along_axis(t64, top, -1)
    np.put_along_axis(pt, top, np.exp(_np_log_softmax(vals)), -1)
    ls = _np_log_softmax(s64)
    want = np.where(pt > 0, pt * (np.log(np.where(pt > 0, pt, 1)) - ls), 0).sum(-1)
    np.testing.assert_allclose(topk_kl(s, t, k), want, rtol=1e-4, atol=1e-6)
    assert float(jnp.min(topk_kl(s, t, k))) >= 0


def test_cross_entropy_matches_log_softmax(logits):
    s, _ = logits
    y = jax.random.randint(jax.random.key(1), (B, T), 0, V)
    want = -np.take_along_axis(
        _np_log_softmax(np.asarray(s, np.float64)), np.asarray(y)[..., None], -1
    )
    np.testing.assert_allclose(cross_entropy(s, y), want[..., 0], rtol=1e-5)


@pytest.mark.parametrize("kind", ["forward", "reverse", "topk"])
@pytest.mark.parametrize("chunk", [0, 4, 11])
def test_chunked_losses_and_grads_equal_the_full_computation(kind, chunk):
    """Chunking (with a ragged last chunk) gives the unchunked masked sums and gradients."""
    ks = jax.random.split(jax.random.key(2), 5)
    hs, ht = jax.random.normal(ks[0], (B, T, D)), jax.random.normal(ks[1], (B, T, D + 2))
    ws, wt = jax.random.normal(ks[2], (D, V)), jax.random.normal(ks[3], (D + 2, V))
    y = jax.random.randint(ks[4], (B, T), 0, V)
    mask = jnp.ones((B, T)).at[0, 7:].set(0.0).at[1, 3].set(0.0)
    cfg = LossConfig(kl=kind, top_k=5, ce_weight=1.0, chunk=chunk, temperature=1.5)

    def chunked(hs, ws):
        sums = chunked_logit_losses(hs, lambda h: h @ ws, y, mask, cfg, ht, lambda h: h @ wt)
        return sums["kl"] + 0.5 * sums["ce"], sums

    def full(hs, ws):
        s, t = hs @ ws, ht @ wt
        kl = kd_loss(s, t, mask, kind=kind, temperature=1.5, top_k=5) * mask.sum()
        ce = jnp.sum(cross_entropy(s, y) * mask)
        return kl + 0.5 * ce, {"kl": kl, "ce": ce}

    (v1, a1), g1 = jax.value_and_grad(chunked, (0, 1), has_aux=True)(hs, ws)
    (v2, a2), g2 = jax.value_and_grad(full, (0, 1), has_aux=True)(hs, ws)
    np.testing.assert_allclose(a1["kl"], a2["kl"], rtol=1e-5)
    np.testing.assert_allclose(a1["ce"], a2["ce"], rtol=1e-5)
    for x, z in zip(g1, g2):
        np.testing.assert_allclose(x, z, rtol=1e-4, atol=1e-6)


def test_chunked_loss_never_materializes_full_logits():
    """With chunk < T no (b, T, V) array exists in the forward or backward pass."""
    hs, ht = jnp.ones((B, T, D)), jnp.ones((B, T, D))
    ws = jnp.ones((D, V))
    y, mask = jnp.zeros((B, T), jnp.int32), jnp.ones((B, T))
    cfg = LossConfig(chunk=4, ce_weight=1.0)

    def f(hs, ws):
        s = chunked_logit_losses(hs, lambda h: h @ ws, y, mask, cfg, ht, lambda h: h @ ws)
        return s["kl"] + s["ce"]

    def shapes(jaxpr, acc):
        for eqn in jaxpr.eqns:
            acc.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                shapes(sub, acc)
        return acc

    seen = shapes(jax.make_jaxpr(jax.grad(f, (0, 1)))(hs, ws).jaxpr, set())
    assert (B, 4, V) in seen  # the per-chunk logits
    assert not any(len(s) == 3 and s[-1] == V and s[1] > 4 for s in seen), sorted(seen)


def test_intermediate_losses():
    a = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])  # (1, 2, 2)
    b = jnp.array([[[2.0, 0.0], [1.0, 0.0]]])
    m = jnp.ones((1, 2))
    assert float(intermediate_loss(a, b, m, "cosine")) == pytest.approx(0.0 + 1.0)
    assert float(intermediate_loss(a, b, m, "mse")) == pytest.approx(0.5 + 2.5)
    assert float(intermediate_loss(a, b, m.at[0, 1].set(0), "mse")) == pytest.approx(0.5)
    proj = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # (2, 3): swaps the two dims
    b3 = jnp.array([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]])
    assert float(intermediate_loss(a, b3, m, "mse", proj)) == pytest.approx(0.0)


def test_dynamic_balancing_scales_terms_without_gradient_through_the_weights():
    cfg = LossConfig(intermediate=((0, 0),), ce_weight=1.0, balance=True)
    kl, ce, inter = jnp.array(2.0), jnp.array(3.0), jnp.array(8.0)
    # kd = kl + (kl/inter) inter = 4; kd <- kd * (ce/kd) = 3; total = ce + kd = 6
    assert float(combine_losses(kl, ce, inter, cfg)) == pytest.approx(6.0)
    g = jax.grad(lambda k, c, i: combine_losses(k, c, i, cfg), (0, 1, 2))(kl, ce, inter)
    # d/dkl = ce/kd = 0.75; d/dinter = (kl/inter) * (ce/kd) = 0.1875; d/dce = 1
    np.testing.assert_allclose(g, [0.75, 1.0, 0.1875], rtol=1e-6)
    plain = LossConfig(intermediate=((0, 0),), balance=False, kd_weight=2.0)
    assert float(combine_losses(kl, ce, inter, plain)) == pytest.approx(20.0)
    lm = LossConfig(kl="none", ce_weight=1.0)
    assert float(combine_losses(kl, ce, None, lm)) == pytest.approx(3.0)


def test_loss_config_validates():
    with pytest.raises(ValueError, match="top_k"):
        LossConfig(kl="topk")
    with pytest.raises(ValueError, match="kl must be"):
        LossConfig(kl="jsd")
    assert LossConfig(intermediate=[[1, 2]]).intermediate == ((1, 2),)
