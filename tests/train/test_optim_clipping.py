"""make_optimizer clips by the global norm: hand-computed AdamW steps on gradients whose
global norm is above or below clip_norm."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune.train.config import OptimConfig
from jaxprune.train.optim import make_optimizer

PARAMS = {"w": jnp.full((2, 3), 0.5), "b": jnp.full((3,), -0.25)}
# global norm over all leaves: sqrt(6 * 1.5^2 + 3 * 2^2) = sqrt(25.5)
G1 = {"w": jnp.full((2, 3), 1.5), "b": jnp.asarray([2.0, -2.0, 2.0])}
G2 = {"w": jnp.asarray([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1]]), "b": jnp.asarray([0.2, 0.1, -0.3])}
NORM1 = float(np.sqrt(25.5))


def _cfg(**kw):
    base = dict(lr=0.1, warmup_steps=0, schedule="constant", b1=0.9, b2=0.95, eps=0.3)
    return OptimConfig(**{**base, "weight_decay": 0.2, **kw})


def _adamw(grads: list[dict], cfg: OptimConfig, clip: float | None) -> list[dict]:
    """Reference AdamW updates (bias-corrected moments, decoupled decay on >= 2-dim
    parameters, params held fixed so each update is comparable), after global-norm clip."""
    p = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
    mu = {k: np.zeros_like(v) for k, v in p.items()}
    nu = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for t, g in enumerate(grads, start=1):
        g = {k: np.asarray(v, np.float64) for k, v in g.items()}
        norm = np.sqrt(sum((v**2).sum() for v in g.values()))
        if clip is not None and norm > clip:
            g = {k: v * clip / norm for k, v in g.items()}
        upd = {}
        for k in p:
            mu[k] = cfg.b1 * mu[k] + (1 - cfg.b1) * g[k]
            nu[k] = cfg.b2 * nu[k] + (1 - cfg.b2) * g[k] ** 2
            m_hat, v_hat = mu[k] / (1 - cfg.b1**t), nu[k] / (1 - cfg.b2**t)
            decay = cfg.weight_decay * p[k] if p[k].ndim >= 2 else 0.0
            upd[k] = -cfg.lr * (m_hat / (np.sqrt(v_hat) + cfg.eps) + decay)
        out.append(upd)
    return out


def _run(cfg: OptimConfig, grads: list[dict]) -> list[dict]:
    tx = make_optimizer(cfg, 100)
    state, out = tx.init(PARAMS), []
    for g in grads:
        upd, state = tx.update(g, state, PARAMS)
        out.append({k: np.asarray(v) for k, v in upd.items()})
    return out


def _close(got: list[dict], want: list[dict]) -> None:
    for a, b in zip(got, want, strict=True):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_a_gradient_above_the_clip_norm_is_scaled_to_it():
    cfg = _cfg(clip_norm=1.0)
    got = _run(cfg, [G1, G2])
    _close(got, _adamw([G1, G2], cfg, clip=1.0))
    unclipped = _adamw([G1, G2], cfg, clip=None)
    assert np.abs(got[0]["w"] - unclipped[0]["w"]).max() > 1e-3  # clipping changed step 1
    assert np.abs(got[1]["b"] - unclipped[1]["b"]).max() > 1e-3  # and, via the moments, step 2


def test_the_clipped_gradient_has_exactly_the_clip_norm():
    """With b1 = 0 and eps large the first update is proportional to the clipped gradient."""
    cfg = _cfg(clip_norm=2.0, b1=0.0, eps=1e6, weight_decay=0.0)
    (upd,) = _run(cfg, [G1])
    # update = -lr * g_clipped / (|g_clipped| + eps) ~= -lr * g_clipped / eps
    g_clipped = {k: -np.asarray(v, np.float64) * cfg.eps / cfg.lr for k, v in upd.items()}
    norm = np.sqrt(sum((v**2).sum() for v in g_clipped.values()))
    assert norm == pytest.approx(2.0, rel=1e-4)
    np.testing.assert_allclose(g_clipped["b"], np.asarray(G1["b"]) * 2.0 / NORM1, rtol=1e-4)


@pytest.mark.parametrize("clip", [NORM1 * 1.01, 100.0])
def test_a_gradient_below_the_clip_norm_is_untouched(clip):
    cfg = _cfg(clip_norm=clip)
    got = _run(cfg, [G1, G2])
    _close(got, _adamw([G1, G2], cfg, clip=None))
    ref = optax.adamw(0.1, b1=0.9, b2=0.95, eps=0.3, weight_decay=0.2, mask=lambda p: {
        "w": True, "b": False
    })  # fmt: skip
    state = ref.init(PARAMS)
    upd, _ = ref.update(G1, state, PARAMS)
    _close(got[:1], [jax.tree.map(np.asarray, upd)])


def test_clip_norm_zero_disables_clipping():
    cfg = _cfg(clip_norm=0.0)
    _close(_run(cfg, [G1, G2]), _adamw([G1, G2], cfg, clip=None))
