"""Backward SSD Pallas kernels (Triton style), one program per (batch, head, chunk).

  dprev_call  dprev_c = (dout * e)^T C, e_m = exp(lam_m) on rows of the entering segment
  bwd_call    everything else per chunk, given dstates from the reverse state pass:
              dx, the direct ddt, the per-step log-decay gradient da (stable rectangle-sum
              form), and the per-head dB and dC (summed over each group's heads in XLA).

Derivation, with M = CB * L (L the masked causal decay), G = dout x^T, w the chunk-state
weights, e the prev-state weights (`tiles.py`):
  y_diag = (M * dt_k) x         -> dx += dt * (M^T dout), ddt_k += sum_m M G, dCB = G L dt_k
  S      = x^T (B * w dt)       -> dx += w dt (B dS^T), dB += w dt (x dS), ddt += w <x, B dS^T>
  y_off  = e * (C prev^T)       -> dC += e (dout prev)
  dC += dCB B, dB += dCB^T C. The decays depend on the per-step a_j = dt_j A through
  lam_m - lam_k = sum_{k < j <= m} a_j: da_j collects the rectangle sum of Z = dCB * CB, the
  exclusive prefix of the state terms and the suffix of the prev-state terms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.kernels.ssd.layout import Dims, Prepared
from jaxprune.kernels.ssd.tiles import (
    decay_matrix,
    intra_mask,
    mm,
    prefix_sum_exclusive,
    prev_weights,
    rectangle_sum,
    state_weights,
    suffix_sum,
)
from jaxprune.kernels.ssd.triton_fwd import (
    cb_spec,
    head_spec,
    run_kernel,
    seg_spec,
    state_spec,
    time_spec,
    vec_spec,
)

Array = jax.Array
f32 = jnp.float32


def _dprev_kernel(dout_ref, c_ref, lam_ref, seg_ref, dprev_ref) -> None:
    do = dout_ref[...]
    e = prev_weights(lam_ref[...], seg_ref[...])
    dprev_ref[...] = mm((do.astype(f32) * e[:, None]).astype(do.dtype), c_ref[...], (0, 0))


def _bwd_kernel(
    x_ref, b_ref, c_ref, cb_ref, dt_ref, lam_ref, seg_ref, dout_ref, prev_ref, ds_ref, d_ref,
    dx_ref, ddt_ref, da_ref, db_ref, dc_ref,
) -> None:  # fmt: skip
    q = lam_ref.shape[0]
    x, bm, cm, do = x_ref[...], b_ref[...], c_ref[...], dout_ref[...]
    cdt = x.dtype
    xf, dof = x.astype(f32), do.astype(f32)
    cb, dt, lam, seg = cb_ref[...], dt_ref[...], lam_ref[...], seg_ref[...]

    # Intra-chunk (diagonal block) term.
    decay = decay_matrix(lam, intra_mask(seg))
    gram = mm(do, x, (1, 1))  # G[m, k] = dout_m . x_k
    m_mat = cb * decay
    dcb = gram * decay * dt[None, :]
    dx = dt[:, None] * mm(m_mat.astype(cdt), do, (0, 0))
    ddt = jnp.sum(m_mat * gram, axis=0)
    dcb_c = dcb.astype(cdt)
    dc = mm(dcb_c, bm)
    db = mm(dcb_c, cm, (0, 0))
    da = rectangle_sum(dcb * cb)

    # Chunk-state term: S = sum_k w_k dt_k x_k (outer) B_k, with dS = dstates.
    w = state_weights(lam, lam_ref[q - 1], seg, seg_ref[q - 1])
    wdt = w * dt
    ds = ds_ref[...].astype(cdt)
    b_ds = mm(bm, ds, (1, 1))  # (Q, Pp)
    t_dir = w * jnp.sum(xf * b_ds, axis=1)
    dx = dx + wdt[:, None] * b_ds
    ddt = ddt + t_dir
    db = db + wdt[:, None] * mm(x, ds)
    da = da + prefix_sum_exclusive(t_dir * dt)

    # Inter-chunk (prev-state) term.
    prev = prev_ref[...].astype(cdt)
    e = prev_weights(lam, seg)
    y_off = mm(cm, prev, (1, 1))  # (Q, Pp), before the e_m factor
    dc = dc + e[:, None] * mm(do, prev)
    da = da + suffix_sum(e * jnp.sum(dof * y_off, axis=1))

    dx_ref[...] = (dx + d_ref[...][None, :] * dof).astype(dx_ref.dtype)
    ddt_ref[...] = ddt
    da_ref[...] = da
    db_ref[...] = db
    dc_ref[...] = dc


def dprev_call(k: Prepared, dout: Array, dims: Dims, interpret: bool) -> Array:
    """dL/dprev per chunk (c, b, H, Pp, Np) fp32; ``dout`` (b, Tp, H, Pp) is after the gate."""
    (dprev,) = run_kernel(
        _dprev_kernel,
        (dims.b, dims.h, dims.nc),
        [
            time_spec(dims, dims.pp),
            time_spec(dims, dims.np_, per_group=True),
            vec_spec(dims),
            seg_spec(dims),
        ],
        [state_spec(dims)],
        [jax.ShapeDtypeStruct((dims.nc, dims.b, dims.h, dims.pp, dims.np_), f32)],
        dims,
        "ssd_bwd_dprev",
        interpret,
    )(dout, k.C, k.lam, k.seg)
    return dprev


def bwd_call(
    k: Prepared,
    cb: Array,
    dout: Array,
    prev: Array,
    dstates: Array,
    dims: Dims,
    interpret: bool,
) -> tuple[Array, Array, Array, Array, Array]:
    """Per-chunk backward. Returns dx (b, Tp, H, Pp) in x's dtype (includes D dout), ddt and
    da (b, H, Tp) fp32 (da without the chunk-level decay term), per-head dB and dC
    (b, Tp, H, Np) fp32."""
    x_spec = time_spec(dims, dims.pp)
    g_spec = time_spec(dims, dims.np_, per_group=True)
    h_spec = time_spec(dims, dims.np_)
    vec = jax.ShapeDtypeStruct((dims.b, dims.h, dims.tp), f32)
    per_head = jax.ShapeDtypeStruct((dims.b, dims.tp, dims.h, dims.np_), f32)
    outs = run_kernel(
        _bwd_kernel,
        (dims.b, dims.h, dims.nc),
        [
            x_spec,
            g_spec,
            g_spec,
            cb_spec(dims),
            vec_spec(dims),
            vec_spec(dims),
            seg_spec(dims),
            x_spec,
            state_spec(dims),
            state_spec(dims),
            head_spec(dims),
        ],
        [x_spec, vec_spec(dims), vec_spec(dims), h_spec, h_spec],
        [jax.ShapeDtypeStruct(k.x.shape, k.x.dtype), vec, vec, per_head, per_head],
        dims,
        "ssd_bwd_chunk",
        interpret,
    )(k.x, k.B, k.C, cb, k.dt, k.lam, k.seg, dout, prev, dstates, k.D)
    return tuple(outs)
