"""The fused (analytic-gradient) logit losses against a plain reference and the old step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.nn.model import init_model
from jaxprune.presets import tiny_hybrid, tiny_llama
from jaxprune.testing.train import build_step, host_batch, small_config
from jaxprune.train.config import LossConfig, OptimConfig, TrainConfig
from jaxprune.train.fused_loss import LMHead, fused_logit_losses, supports

B, T, D, V = 2, 11, 6, 17


def _reference(s, t, y, mask, cfg):
    """Unchunked, straightforward masked sums: KL on log_softmax(. / T), CE on log_softmax."""
    ls = jax.nn.log_softmax(s / cfg.temperature, -1)
    kl = jnp.zeros(())
    if cfg.kl != "none":
        lt = jax.nn.log_softmax(t / cfg.temperature, -1)
        pt, ps = jnp.exp(lt), jnp.exp(ls)
        tok = jnp.sum(pt * (lt - ls), -1) if cfg.kl == "forward" else jnp.sum(ps * (ls - lt), -1)
        kl = jnp.sum(tok * mask)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(s, -1), y[..., None], -1)[..., 0]
    return {"kl": kl, "ce": jnp.sum(nll * mask)}


def _inputs(tied: bool):
    ks = jax.random.split(jax.random.key(3), 7)
    hs, ht = jax.random.normal(ks[0], (B, T, D)), jax.random.normal(ks[1], (B, T, D + 3))
    ws = 0.7 * jax.random.normal(ks[2], (V, D) if tied else (D, V))
    hp = {"norm": 1 + 0.1 * jax.random.normal(ks[3], (D,)), "w": ws}
    thp = {"norm": 1 + 0.1 * jax.random.normal(ks[4], (D + 3,)),
           "w": jax.random.normal(ks[5], (D + 3, V))}  # fmt: skip
    y = jax.random.randint(ks[6], (B, T), 0, V)
    mask = jnp.ones((B, T)).at[0, 7:].set(0.0).at[1, :2].set(0.0)  # right and left padding
    return hp, hs, thp, ht, y, mask


@pytest.mark.parametrize("kind", ["forward", "reverse", "none"])
@pytest.mark.parametrize("ce_weight", [0.0, 0.5])
@pytest.mark.parametrize(
    ("chunk", "temp", "tied"), [(0, 1.0, True), (4, 1.7, False), (11, 0.6, True)]
)
def test_fused_losses_and_grads_match_the_reference(kind, ce_weight, chunk, temp, tied):
    hp, hs, thp, ht, y, mask = _inputs(tied)
    cfg = LossConfig(kl=kind, ce_weight=ce_weight, chunk=chunk, temperature=temp)
    head, t_head = LMHead(1e-5, tied, "float32"), LMHead(1e-5, False, "float32")
    weights = {"kl": 0.8, "ce": 0.3}

    def ref(hp, hs):
        sums = _reference(head(hp, hs), t_head(thp, ht), y, mask, cfg)
        return sum(weights[k] * v for k, v in sums.items()), sums

    def fused(hp, hs):
        sums = fused_logit_losses(head, hp, hs, y, mask, cfg, t_head, thp, ht)
        return sum(weights[k] * v for k, v in sums.items()), sums

    (want, want_sums), want_g = jax.value_and_grad(ref, (0, 1), has_aux=True)(hp, hs)
    (got, got_sums), got_g = jax.jit(jax.value_and_grad(fused, (0, 1), has_aux=True))(hp, hs)
    if kind == "none" or ce_weight > 0:
        np.testing.assert_allclose(got_sums["ce"], want_sums["ce"], rtol=1e-5)
    else:
        assert float(got_sums["ce"]) == 0.0
    np.testing.assert_allclose(got_sums["kl"], want_sums["kl"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, want if kind == "none" or ce_weight > 0 else
                               weights["kl"] * want_sums["kl"], rtol=1e-5)  # fmt: skip
    if kind != "none" and ce_weight == 0:  # the reference objective has a CE term too
        want_g = jax.grad(lambda hp, hs: weights["kl"] * ref(hp, hs)[1]["kl"], (0, 1))(hp, hs)
    chex.assert_trees_all_close(got_g, want_g, rtol=1e-4, atol=1e-5)
    # masked tokens carry no gradient
    assert float(jnp.max(jnp.abs(got_g[1][0, 7:]))) == 0.0


def test_fused_loss_refuses_topk_and_the_head_matches_the_model():
    assert not supports(LossConfig(kl="topk", top_k=3)) and supports(LossConfig(kl="reverse"))
    with pytest.raises(ValueError, match="topk"):
        fused_logit_losses(None, {}, None, None, None, LossConfig(kl="topk", top_k=3))
    for cfg in (tiny_llama(), tiny_hybrid()):  # tied and untied embeddings
        model = init_model(cfg, 0)
        h = jax.random.normal(jax.random.key(1), (2, 5, cfg.hidden))
        head, hp = LMHead.of(model)
        assert head.tied == cfg.tie_embeddings
        np.testing.assert_allclose(head(hp, h), model.logits(h), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss",
    [
        LossConfig(kl="forward", intermediate=((1, 3), (-1, -1)), ce_weight=0.5, chunk=5),
        LossConfig(kl="reverse", temperature=2.0, chunk=0),
    ],
)
def test_a_step_with_the_fused_loss_equals_the_chunked_remat_step(loss):
    cfg = TrainConfig(steps=4, batch_size=4, seq_len=8, grad_accum=2, loss=loss,
                      optim=OptimConfig(lr=0.1, warmup_steps=0, eps=1.0), compute_dtype="float32",
                      teacher_dtype="float32")  # fmt: skip
    # eps = 1: Adam's m / sqrt(v) would amplify fp32 rounding of near-zero gradients
    batch = host_batch(2, 2, 8)
    batch["loss_mask"][0, 1, 5:] = 0.0  # padding
    out = []
    for fused in (True, False):
        fn, state, rest, t_state, put = build_step(
            cfg, 1, teacher_cfg=small_config(hidden=32, pattern="M*-M*-"), fused_loss=fused
        )
        ms = []
        for _ in range(2):
            state, m = fn(state, rest, t_state, put(batch))
            ms.append(jax.device_get(m))
        out.append((jax.device_get(state["params"]), ms))
    (p_new, m_new), (p_old, m_old) = out
    for a, b in zip(m_new, m_old, strict=True):
        for k in ("loss", "kl", "ce", "inter", "grad_norm", "head_grad_norm"):
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6, err_msg=k)
    chex.assert_trees_all_close(p_new, p_old, rtol=1e-5, atol=1e-6)
    assert not np.allclose(m_new[0]["loss"], m_new[1]["loss"])  # the params did move
