"""Forward SSD Pallas kernels in the portable Triton style (`pl.pallas_call` + `pl.BlockSpec`).

Three per-chunk kernels, each one program per (batch, head or group, chunk), all parallel:
  cb_call     CB = C B^T per group                                       (b, c, G, Q, Q)
  state_call  S_c = x^T (B * w), w_k = exp(lam_last - lam_k) dt_k        (c, b, H, Pp, Np)
  out_call    y = (CB * L * dt) x + e * (C prev^T) + D x, then * silu(z)  (b, Tp, H, Pp)
The state passing between `state_call` and `out_call` is an XLA scan (`state_passing.py`).
Block shapes follow `layout.py`; the interpreter runs the same code on CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from jaxprune.kernels.ssd.layout import Dims, Prepared, default_num_warps
from jaxprune.kernels.ssd.tiles import (
    decay_matrix,
    intra_mask,
    mm,
    prev_weights,
    silu,
    state_weights,
)

Array = jax.Array
f32 = jnp.float32


# --- BlockSpecs on the grid (b, H, c) (index-map arguments i, j, k) -------------------------


def time_spec(dims: Dims, width: int, per_group: bool = False) -> pl.BlockSpec:
    """(b, Tp, H or G, width) arrays: one chunk of one head (or of the head's group)."""
    r = dims.r if per_group else 1
    return pl.BlockSpec((None, dims.q, None, width), lambda i, j, k: (i, k, j // r, 0))


def vec_spec(dims: Dims) -> pl.BlockSpec:
    """(b, H, Tp) fp32 vectors (dt, lam, ...): one chunk of one head."""
    return pl.BlockSpec((None, None, dims.q), lambda i, j, k: (i, j, k))


def seg_spec(dims: Dims) -> pl.BlockSpec:
    """(b, Tp) relative segment numbers: one chunk."""
    return pl.BlockSpec((None, dims.q), lambda i, j, k: (i, k))


def state_spec(dims: Dims) -> pl.BlockSpec:
    """(c, b, H, Pp, Np) per-chunk states."""
    return pl.BlockSpec((None, None, None, dims.pp, dims.np_), lambda i, j, k: (k, i, j, 0, 0))


def cb_spec(dims: Dims, per_group: bool = True) -> pl.BlockSpec:
    """(b, c, G, Q, Q) CB blocks, read by the head's group (or written per group)."""
    r = dims.r if per_group else 1
    return pl.BlockSpec((None, None, None, dims.q, dims.q), lambda i, j, k: (i, k, j // r, 0, 0))


def head_spec(dims: Dims) -> pl.BlockSpec:
    """(H, Pp) per-head vectors (D)."""
    return pl.BlockSpec((None, dims.pp), lambda i, j, k: (j, 0))


def run_kernel(
    kernel: Callable[..., None],
    grid: tuple[int, ...],
    in_specs: Sequence[pl.BlockSpec],
    out_specs: Sequence[pl.BlockSpec],
    out_shape: Sequence[jax.ShapeDtypeStruct],
    dims: Dims,
    name: str,
    interpret: bool,
) -> Callable[..., list[Array]]:
    """`pl.pallas_call` with Triton compiler params (ignored by the interpreter)."""
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=list(in_specs),
        out_specs=list(out_specs),
        out_shape=list(out_shape),
        compiler_params=pltriton.CompilerParams(num_warps=default_num_warps(dims), num_stages=1),
        interpret=interpret,
        name=name,
    )


# --- Kernels ---------------------------------------------------------------------------------


def _cb_kernel(c_ref, b_ref, cb_ref) -> None:
    cb_ref[...] = mm(c_ref[...], b_ref[...], (1, 1))


def _state_kernel(x_ref, b_ref, dt_ref, lam_ref, seg_ref, s_ref) -> None:
    q = lam_ref.shape[0]
    w = state_weights(lam_ref[...], lam_ref[q - 1], seg_ref[...], seg_ref[q - 1]) * dt_ref[...]
    bw = (b_ref[...].astype(f32) * w[:, None]).astype(x_ref.dtype)
    s_ref[...] = mm(x_ref[...], bw, (0, 0))


def _out_kernel(
    x_ref, c_ref, cb_ref, dt_ref, lam_ref, seg_ref, prev_ref, d_ref, *rest, has_z: bool, emit: bool
) -> None:
    z_ref, rest = (rest[0], rest[1:]) if has_z else (None, rest)
    out_ref, pre_ref = (rest[0], rest[1]) if emit else (rest[0], None)
    x = x_ref[...]
    lam, seg = lam_ref[...], seg_ref[...]
    scores = cb_ref[...] * decay_matrix(lam, intra_mask(seg)) * dt_ref[...][None, :]
    y = mm(scores.astype(x.dtype), x)
    y_off = mm(c_ref[...], prev_ref[...].astype(x.dtype), (1, 1))
    y = y + prev_weights(lam, seg)[:, None] * y_off + d_ref[...][None, :] * x.astype(f32)
    if pre_ref is not None:
        pre_ref[...] = y.astype(pre_ref.dtype)
    if z_ref is not None:
        y = y * silu(z_ref[...].astype(f32))
    out_ref[...] = y.astype(out_ref.dtype)


# --- Calls -----------------------------------------------------------------------------------


def cb_call(k: Prepared, dims: Dims, interpret: bool) -> Array:
    """CB per group and chunk: (b, c, G, Q, Q) fp32 (unmasked; consumers apply the masks)."""
    (cb,) = run_kernel(
        _cb_kernel,
        (dims.b, dims.g, dims.nc),
        [time_spec(dims, dims.np_), time_spec(dims, dims.np_)],
        [cb_spec(dims, per_group=False)],
        [jax.ShapeDtypeStruct((dims.b, dims.nc, dims.g, dims.q, dims.q), f32)],
        dims,
        "ssd_chunk_cb",
        interpret,
    )(k.C, k.B)
    return cb


def state_call(k: Prepared, dims: Dims, interpret: bool) -> Array:
    """Per-chunk states S_c (c, b, H, Pp, Np) fp32, restricted to each chunk's last segment."""
    (states,) = run_kernel(
        _state_kernel,
        (dims.b, dims.h, dims.nc),
        [
            time_spec(dims, dims.pp),
            time_spec(dims, dims.np_, per_group=True),
            vec_spec(dims),
            vec_spec(dims),
            seg_spec(dims),
        ],
        [state_spec(dims)],
        [jax.ShapeDtypeStruct((dims.nc, dims.b, dims.h, dims.pp, dims.np_), f32)],
        dims,
        "ssd_chunk_state",
        interpret,
    )(k.x, k.B, k.dt, k.lam, k.seg)
    return states


def out_call(
    k: Prepared, cb: Array, prev: Array, dims: Dims, interpret: bool, emit_pre_gate: bool
) -> tuple[Array, Array | None]:
    """Chunk output (b, Tp, H, Pp) in x's dtype, and with ``emit_pre_gate`` (only with z) the
    value before the z gate, y + D x (a residual for dz)."""
    has_z = k.z is not None
    emit = emit_pre_gate and has_z
    x_spec = time_spec(dims, dims.pp)
    in_specs = [
        x_spec,
        time_spec(dims, dims.np_, per_group=True),
        cb_spec(dims),
        vec_spec(dims),
        vec_spec(dims),
        seg_spec(dims),
        state_spec(dims),
        head_spec(dims),
    ] + [x_spec] * has_z
    out_shape = [jax.ShapeDtypeStruct(k.x.shape, k.x.dtype)] * (1 + emit)
    outs = run_kernel(
        functools.partial(_out_kernel, has_z=has_z, emit=emit),
        (dims.b, dims.h, dims.nc),
        in_specs,
        [x_spec] * (1 + emit),
        out_shape,
        dims,
        "ssd_chunk_scan",
        interpret,
    )(k.x, k.C, cb, k.dt, k.lam, k.seg, prev, k.D, *([k.z] if has_z else []))
    return outs[0], (outs[1] if emit else None)
