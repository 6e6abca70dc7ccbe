"""The Mamba2 mixer against an independent token-by-token numpy implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.config import Mamba2Config
from jaxprune.nn.mamba2 import Mamba2


def _softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _silu(x):
    return x / (1 + np.exp(-x))


def naive_mamba2(m: Mamba2, u: np.ndarray) -> np.ndarray:
    """Fused-HF-style computation: in_proj -> conv -> per-token recurrence -> gated norm."""
    cfg = m.cfg
    h, p, n, g, k = cfg.num_heads, cfg.head_dim, cfg.state, cfg.n_groups, cfg.conv_kernel
    P = {path[-1]: np.asarray(v[...], np.float64) for path, v in nnx.to_flat_state(nnx.state(m))}
    b, t, d = u.shape
    z = np.einsum("btd,dhp->bthp", u, P["z_proj"]).reshape(b, t, h * p)
    xbc = np.concatenate(
        [
            np.einsum("btd,dhp->bthp", u, P["x_proj"]).reshape(b, t, -1),
            np.einsum("btd,dgn->btgn", u, P["B_proj"]).reshape(b, t, -1),
            np.einsum("btd,dgn->btgn", u, P["C_proj"]).reshape(b, t, -1),
        ],
        -1,
    )
    dt = np.einsum("btd,dh->bth", u, P["dt_proj"])
    w = np.concatenate(
        [P["conv_x"].reshape(k, -1), P["conv_B"].reshape(k, -1), P["conv_C"].reshape(k, -1)], -1
    )
    bias = np.concatenate(
        [P["conv_x_bias"].ravel(), P["conv_B_bias"].ravel(), P["conv_C_bias"].ravel()]
    )
    pad = np.concatenate([np.zeros((b, k - 1, xbc.shape[-1])), xbc], 1)
    conv = np.stack([(pad[:, i : i + k] * w).sum(1) for i in range(t)], 1) + bias
    conv = _silu(conv)
    x = conv[..., : h * p].reshape(b, t, h, p)
    B = conv[..., h * p : h * p + g * n].reshape(b, t, g, n)
    C = conv[..., h * p + g * n :].reshape(b, t, g, n)
    A = -np.exp(P["A_log"])
    dt = np.clip(_softplus(dt + P["dt_bias"]), *cfg.dt_limit)
    state = np.zeros((b, h, p, n))
    ys = []
    for i in range(t):
        for head in range(h):
            grp = head // (h // g)
            state[:, head] = (
                np.exp(dt[:, i, head] * A[head])[:, None, None] * state[:, head]
                + dt[:, i, head][:, None, None]
                * x[:, i, head][:, :, None]
                * B[:, i, grp][:, None, :]
            )
        ys.append(
            np.einsum("bhpn,bhn->bhp", state, np.repeat(C[:, i], h // g, axis=1))
            + P["D"][None, :, None] * x[:, i]
        )
    y = np.stack(ys, 1).reshape(b, t, h * p) * _silu(z)
    gs = h * p // g
    yg = y.reshape(b, t, g, gs)
    yg = yg / np.sqrt(np.mean(yg**2, -1, keepdims=True) + cfg.norm_eps)
    y = yg.reshape(b, t, h, p) * P["norm"]
    return np.einsum("bthp,hpd->btd", y, P["out_proj"])


@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("dt_limit", [(0.0, float("inf")), (0.05, 0.5)])
def test_mixer_matches_naive_recurrence(groups, dt_limit):
    cfg = Mamba2Config(
        num_heads=6, head_dim=3, state=5, n_groups=groups, chunk_size=4, dt_limit=dt_limit
    )
    m = Mamba2(cfg, 7, rngs=nnx.Rngs(groups))
    # non-trivial biases so every parameter is exercised
    for name in ("conv_x_bias", "conv_B_bias", "conv_C_bias", "norm", "D"):
        v = getattr(m, name)
        v[...] = jax.random.normal(jax.random.key(len(name)), v[...].shape)
    u = np.random.default_rng(0).normal(size=(2, 11, 7))
    got, _ = jax.jit(lambda m, u: m(u))(m, jnp.asarray(u, jnp.float32))
    np.testing.assert_allclose(got, naive_mamba2(m, u), rtol=2e-4, atol=2e-5)
