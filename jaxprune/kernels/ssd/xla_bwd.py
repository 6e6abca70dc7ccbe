"""Hand-written backward of one chunk step of `xla._chunk_step` (used by `xla.ssd_xla`'s
custom VJP): recomputes the chunk's decays from its inputs, never stores them.

Layouts as in `xla._chunk_step`: prev (b, G, r, P, N), x (b, Q, G, r, P), dt (b, Q, G, r),
B/C (b, Q, G, N), a (G, r). The gradient of each clamped exponential exp(min(v, 0)) is taken
where v <= 0 (as `reference._neg_part` does); masked entries are exactly 0 and get none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.kernels.ssd.reference import _masked_exp

Array = jax.Array


def _t(v: Array) -> Array:
    """(b, G, r, Q) -> (b, Q, G, r, 1), to scale (b, Q, G, r, P) tensors per position."""
    return jnp.moveaxis(v, -1, 1)[..., None]


def chunk_setup(dt: Array, a: Array, masks: tuple | None) -> tuple:
    """What the forward and the backward of one chunk both start from: dt as (b, G, r, Q),
    its cumulative decay lam = cumsum(dt * a) and lam's last column (b, G, r), and the
    masks broadcast against (b, G, r, ...): (intra (.., Q, Q) with the causal mask folded
    in, state (.., Q), keep (b,), prev (.., Q)); None entries mean "all allowed"."""
    q = dt.shape[1]
    dtt = jnp.moveaxis(dt, 1, -1)  # (b, G, r, Q)
    lam = jnp.cumsum(dtt * a[:, :, None], axis=-1)
    causal = jnp.tril(jnp.ones((q, q), bool))
    if masks is None:
        return dtt, lam, lam[..., -1], (causal, None, None, None)
    intra, state_m, keep, prev_m = masks
    return (
        dtt,
        lam,
        lam[..., -1],
        ((intra & causal)[:, None, None], state_m[:, None, None], keep, prev_m[:, None, None]),
    )


def chunk_step_bwd(
    prev: Array,
    x: Array,
    dt: Array,
    B: Array,
    C: Array,
    a: Array,
    masks: tuple[Array, ...] | None,
    dy: Array,
    dnew: Array,
) -> tuple[Array, ...]:
    """Cotangents (dprev, dx, ddt, dB, dC, da) of one chunk given dy (b, Q, G, r, P) and the
    cotangent dnew (b, G, r, P, N) of the state after the chunk."""
    dtt, lam, lam_last, (intra, state_m, keep, prev_m) = chunk_setup(dt, a, masks)
    cb = jnp.einsum("bmgn,bkgn->bgmk", C, B)
    v = lam[..., :, None] - lam[..., None, :]
    decay = _masked_exp(v, intra)  # (b, G, r, Q, Q)
    scores = cb[:, :, None] * decay * dtt[..., None, :]
    e = _masked_exp(lam, prev_m)
    u = lam_last[..., None] - lam
    ew = _masked_exp(u, state_m)
    w = ew * dtt
    dec = jnp.exp(lam_last)
    if keep is not None:
        dec = jnp.where(keep[:, None, None], dec, 0.0)

    # Inter-chunk output y_off = e * (C . prev).
    dyo = dy * _t(e)
    yo = jnp.einsum("bmgn,bgrpn->bmgrp", C, prev)
    de = jnp.moveaxis(jnp.sum(dy * yo, -1), 1, -1)
    dC = jnp.einsum("bmgrp,bgrpn->bmgn", dyo, prev)
    dprev = jnp.einsum("bmgrp,bmgn->bgrpn", dyo, C) + dec[..., None, None] * dnew

    # Chunk state s = sum_k w_k x_k (outer) B_k and the carried decay.
    ddec = jnp.sum(dnew * prev, axis=(-2, -1))
    dxw = jnp.einsum("bkgn,bgrpn->bkgrp", B, dnew)
    dB = jnp.einsum("bkgrp,bgrpn->bkgn", x * _t(w), dnew)
    dx = dxw * _t(w)
    dw = jnp.moveaxis(jnp.sum(dxw * x, -1), 1, -1)

    # Intra-chunk y_diag = scores @ x, scores = cb * decay * dt_k.
    dscores = jnp.einsum("bmgrp,bkgrp->bgrmk", dy, x)
    dx = dx + jnp.einsum("bgrmk,bmgrp->bkgrp", scores, dy)
    t = dscores * decay
    dcb = jnp.sum(t * dtt[..., None, :], axis=2)
    ddt = jnp.sum(t * cb[:, :, None], axis=-2) + dw * ew
    dv = jnp.where(v > 0, 0.0, t * cb[:, :, None] * dtt[..., None, :])
    dC = dC + jnp.einsum("bgmk,bkgn->bmgn", dcb, B)
    dB = dB + jnp.einsum("bgmk,bmgn->bkgn", dcb, C)

    # Back to the cumulative decays lam, then to dt * a.
    du = jnp.where(u > 0, 0.0, dw * dtt * ew)
    dlam = jnp.sum(dv, -1) - jnp.sum(dv, -2) + jnp.where(lam > 0, 0.0, de * e) - du
    dlam = dlam.at[..., -1].add(jnp.sum(du, -1) + ddec * dec)
    dda = jnp.flip(jnp.cumsum(jnp.flip(dlam, -1), -1), -1)
    ddt = ddt + dda * a[:, :, None]
    da = jnp.sum(dda * dtt, axis=(0, -1))
    return dprev, dx, jnp.moveaxis(ddt, -1, 1), dB, dC, da
