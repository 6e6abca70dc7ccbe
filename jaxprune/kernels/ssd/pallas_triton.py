"""Mamba2 SSD as portable Pallas kernels (Triton lowering on GPU, the interpreter on CPU).

Forward (one `jax.custom_vjp`):
  XLA     dt processing (bias, softplus, clamp), padding *after* it, lam = chunk cumsum of
          dt * A, relative segment numbers (`layout.prepare`)                 O(b T H)
  Pallas  CB per group (`cb_call`), chunk states (`state_call`)
  XLA     state passing, a scan over chunks (`state_passing.pass_states`)     O(c b H P N)
  Pallas  chunk output with D and the z gate fused (`out_call`)
Backward (recompute, nothing but the inputs and, with z, the pre-gate output is saved):
  Pallas  CB and chunk states again; XLA state passing again
  XLA     z gate: dz, dout * silu(z), dD = sum dout x                         elementwise
  Pallas  dprev per chunk (`dprev_call`)
  XLA     reverse state pass -> dstates, d(chunk decay), d(initial_states)
  Pallas  dx, ddt, stable d(dA), per-head dB / dC (`bwd_call`)
  XLA     sum dB / dC over each group's heads; da -> ddt and dA; vjp of the dt processing

Use `ssd_pallas`; `interpret=True` runs the same kernels on CPU (slow: for checking only).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jaxprune.kernels.ssd.layout import Dims, Prepared, make_dims, pad_axes, prepare
from jaxprune.kernels.ssd.reference import process_dt
from jaxprune.kernels.ssd.state_passing import pass_states, pass_states_reverse
from jaxprune.kernels.ssd.tiles import silu
from jaxprune.kernels.ssd.triton_bwd import bwd_call, dprev_call
from jaxprune.kernels.ssd.triton_fwd import cb_call, out_call, state_call

Array = jax.Array
f32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Static:
    chunk_size: int
    dt_softplus: bool
    dt_limit: tuple[float, float]
    interpret: bool


def _process(dt: Array, dt_bias: Array | None, s: _Static) -> Array:
    return process_dt(dt, dt_bias=dt_bias, dt_softplus=s.dt_softplus, dt_limit=s.dt_limit)


def _forward(args: tuple, s: _Static, emit_pre_gate: bool) -> tuple:
    """Runs the forward stages; returns (y, final (b, H, P, N) fp32, pre-gate output or None)."""
    x, dt, A, B, C, D, z, dt_bias, h0, seq_idx = args
    dims = make_dims(x, B, s.chunk_size)
    k = prepare(x, _process(dt, dt_bias, s), A, B, C, D, z, h0, seq_idx, dims)
    cb = cb_call(k, dims, s.interpret)
    prev, final = pass_states(state_call(k, dims, s.interpret), k.decay, k.h0)
    out, pre = out_call(k, cb, prev, dims, s.interpret, emit_pre_gate)
    unpad = (slice(None), slice(0, dims.t), slice(None), slice(0, dims.p))
    final = final[:, :, : dims.p, : dims.n]
    return out[unpad], final, None if pre is None else pre[unpad]


@functools.partial(jax.custom_vjp, nondiff_argnums=(10,))
def _ssd(x, dt, A, B, C, D, z, dt_bias, h0, seq_idx, s: _Static) -> tuple[Array, Array]:
    y, final, _ = _forward((x, dt, A, B, C, D, z, dt_bias, h0, seq_idx), s, False)
    return y, final


def _ssd_fwd(x, dt, A, B, C, D, z, dt_bias, h0, seq_idx, s: _Static) -> tuple:
    args = (x, dt, A, B, C, D, z, dt_bias, h0, seq_idx)
    y, final, pre = _forward(args, s, True)
    return (y, final), (args, pre)


def _gate_backward(dy: Array, z: Array | None, pre: Array | None) -> tuple[Array, Array | None]:
    """(dout before the gate, fp32; dz) from the output cotangent dy (b, T, H, P)."""
    dy = dy.astype(f32)
    if z is None:
        return dy, None
    zf = z.astype(f32)
    sig = 1.0 / (1.0 + jnp.exp(-zf))
    dz = dy * pre.astype(f32) * sig * (1.0 + zf * (1.0 - sig))
    return dy * silu(zf), dz.astype(z.dtype)


def _sum_groups(t: Array, dims: Dims, like: Array) -> Array:
    """Per-head (b, Tp, H, Np) -> per-group (b, T, G, N) in ``like``'s dtype."""
    t = t.reshape(dims.b, dims.tp, dims.g, dims.r, dims.np_).sum(axis=3)
    return t[:, : dims.t, :, : dims.n].astype(like.dtype)


def _dt_grads(
    ddt_k: Array, da: Array, k: Prepared, args: tuple, s: _Static, dims: Dims
) -> tuple[Array, Array, Array | None]:
    """ddt (b, H, Tp) direct and da (per-step log decay) -> (d dt_raw, dA, d dt_bias)."""
    _, dt, A, _, _, _, _, dt_bias, _, _ = args
    dA = jnp.sum(da * k.dt, axis=(0, 2)).astype(A.dtype)
    ddt_p = ddt_k + da * A.astype(f32)[None, :, None]
    ddt_p = jnp.transpose(ddt_p, (0, 2, 1))[:, : dims.t]
    _, vjp = jax.vjp(lambda v, bias: _process(v, bias, s), dt, dt_bias)
    d_dt, d_bias = vjp(ddt_p)
    return d_dt, dA, d_bias


def _ssd_bwd(s: _Static, res: tuple, cts: tuple[Array, Array]) -> tuple:
    args, pre = res
    x, dt, A, B, C, D, z, dt_bias, h0, seq_idx = args
    dy, dfinal = cts
    dims = make_dims(x, B, s.chunk_size)
    k = prepare(x, _process(dt, dt_bias, s), A, B, C, D, z, h0, seq_idx, dims)
    cb = cb_call(k, dims, s.interpret)
    prev, _ = pass_states(state_call(k, dims, s.interpret), k.decay, k.h0)

    dout, dz = _gate_backward(dy, z, pre)
    dD = None
    if D is not None:
        dd = jnp.sum(dout * x.astype(f32), axis=(0, 1))  # (H, P)
        dD = (dd.sum(axis=1) if D.ndim == 1 else dd).astype(D.dtype)
    dout_k = pad_axes(dout.astype(x.dtype), {1: dims.tp, 3: dims.pp})
    dprev = dprev_call(k, dout_k, dims, s.interpret)
    dfinal_k = pad_axes(dfinal.astype(f32), {2: dims.pp, 3: dims.np_})
    dstates, ddecay, dh0 = pass_states_reverse(dprev, k.decay, prev, dfinal_k)
    dx, ddt_k, da, db_h, dc_h = bwd_call(k, cb, dout_k, prev, dstates, dims, s.interpret)

    # Chunk-level term: decay_c = exp(lam_last_c) depends on every a_j of chunk c.
    dlast = jnp.transpose(ddecay * k.decay, (1, 2, 0))  # (b, H, c)
    da = da + jnp.repeat(dlast, dims.q, axis=2)
    d_dt, dA, d_bias = _dt_grads(ddt_k, da, k, args, s, dims)
    dh0_out = None if h0 is None else dh0[:, :, : dims.p, : dims.n].astype(h0.dtype)
    return (
        dx[:, : dims.t, :, : dims.p],
        d_dt,
        dA,
        _sum_groups(db_h, dims, B),
        _sum_groups(dc_h, dims, C),
        dD,
        dz,
        d_bias,
        dh0_out,
        None,
    )


_ssd.defvjp(_ssd_fwd, _ssd_bwd)


def ssd_pallas(
    x: Array,
    dt: Array,
    A: Array,
    B: Array,
    C: Array,
    chunk_size: int,
    *,
    D: Array | None = None,
    z: Array | None = None,
    dt_bias: Array | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, math.inf),
    initial_states: Array | None = None,
    seq_idx: Array | None = None,
    interpret: bool = False,
) -> tuple[Array, Array]:
    """SSD scan with the Pallas kernels; same semantics as `api.mamba_chunk_scan`.

    Shapes: x (b, T, H, P), dt (b, T, H) raw, A (H,), B/C (b, T, G, N), D (H,) or (H, P),
    z (b, T, H, P), dt_bias (H,), initial_states (b, H, P, N), seq_idx (b, T) int.
    Returns (y (b, T, H, P) in x's dtype, final_states (b, H, P, N) fp32). Differentiable in
    every floating input through a Pallas backward. ``interpret`` runs the kernels in the Pallas
    interpreter (any backend; slow).
    """
    s = _Static(int(chunk_size), bool(dt_softplus), tuple(float(v) for v in dt_limit), interpret)
    return _ssd(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, s)
