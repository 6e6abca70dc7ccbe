"""Backend-neutral data layout for the SSD kernels: padding, the dt / decay pipeline, segments.

Everything here is plain XLA on small or elementwise data, shared by every kernel variant
(the portable Triton-style `pallas_call` kernels today, a Mosaic GPU variant later).

Layouts (Tp = c * Qk, the padded length; Pp / Np the padded head / state dims):
  x, z, dout      (b, Tp, H, Pp)   natural layout, no transposes
  B, C            (b, Tp, G, Np)
  dt, lam         (b, H, Tp) fp32  processed dt and the within-chunk cumsum of dt * A
  seg             (b, Tp) int32    segment number relative to the position before the chunk
  states, prev    (c, b, H, Pp, Np) fp32 (chunk-major, so the state-passing scan needs no copy)
  D               (H, Pp) fp32

Triton needs power-of-two block shapes and dot dims >= 16, so the kernel chunk Qk and Pp, Np
are the next power of two >= 16. SSD's result does not depend on the chunk size (only rounding
does), so a chunk size that is not a power of two runs with the next larger one.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange

from jaxprune.kernels.ssd.reference import _segments

Array = jax.Array


def block_size(v: int) -> int:
    """Smallest power of two that is >= max(v, 16)."""
    return max(16, 1 << (max(v, 1) - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class Dims:
    """Logical and padded sizes of one call."""

    b: int
    t: int
    h: int
    p: int
    g: int
    n: int
    q: int  # kernel chunk size (power of two >= 16)
    pp: int
    np_: int

    @property
    def r(self) -> int:
        return self.h // self.g

    @property
    def nc(self) -> int:
        return -(-self.t // self.q)

    @property
    def tp(self) -> int:
        return self.nc * self.q


def make_dims(x: Array, B: Array, chunk_size: int) -> Dims:
    b, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    return Dims(b, t, h, p, g, n, block_size(chunk_size), block_size(p), block_size(n))


def pad_axes(t: Array, sizes: dict[int, int], mode: str = "constant") -> Array:
    """Pad axis -> new size at the end (zeros, or ``mode``); a no-op where nothing grows."""
    widths = [(0, 0)] * t.ndim
    for axis, size in sizes.items():
        widths[axis] = (0, size - t.shape[axis])
    if all(w == (0, 0) for w in widths):
        return t
    return jnp.pad(t, widths, mode=mode)


class Prepared(NamedTuple):
    """Kernel inputs in the layouts above (see the module docstring)."""

    x: Array
    B: Array
    C: Array
    dt: Array
    lam: Array
    seg: Array
    decay: Array  # (c, b, H) fp32: chunk-to-chunk state decay, 0 where a segment starts
    D: Array
    z: Array | None
    h0: Array  # (b, H, Pp, Np) fp32


def chunk_lam(dt_k: Array, A: Array, q: int) -> Array:
    """dt (b, H, Tp) fp32 -> lam (b, H, Tp): cumulative sum of dt * A within each chunk."""
    a = rearrange(dt_k, "b h (c q) -> b h c q", q=q) * A.astype(jnp.float32)[None, :, None, None]
    return rearrange(jnp.cumsum(a, axis=-1), "b h c q -> b h (c q)")


def relative_segments(seq_idx: Array | None, dims: Dims) -> Array:
    """seq_idx (b, T) -> (b, Tp) int32: segment number minus that of the position before the
    chunk (0 before the first chunk). Row m may read the carried state iff its value is 0;
    positions k, m interact iff their values are equal (the counter is non-decreasing)."""
    if seq_idx is None:
        return jnp.zeros((dims.b, dims.tp), jnp.int32)
    seg = pad_axes(_segments(seq_idx), {1: dims.tp}, mode="edge")
    seg = rearrange(seg, "b (c q) -> b c q", q=dims.q)
    end = seg[:, :, -1]
    before = jnp.concatenate([jnp.zeros_like(end[:, :1]), end[:, :-1]], axis=1)
    return rearrange(seg - before[..., None], "b c q -> b (c q)")


def chunk_decay(lam: Array, seg: Array, dims: Dims) -> Array:
    """(c, b, H) fp32 decay of the carried state across each chunk, exp(min(lam_last, 0)), and
    0 where the chunk ends in a later segment than the one entering it."""
    last = rearrange(lam, "b h (c q) -> b h c q", q=dims.q)[..., -1]
    keep = rearrange(seg, "b (c q) -> b 1 c q", q=dims.q)[..., -1] == 0
    dec = jnp.where(keep, jnp.exp(jnp.minimum(last, 0.0)), 0.0)
    return rearrange(dec, "b h c -> c b h")


def prepare(
    x: Array,
    dt_p: Array,
    A: Array,
    B: Array,
    C: Array,
    D: Array | None,
    z: Array | None,
    h0: Array | None,
    seq_idx: Array | None,
    dims: Dims,
) -> Prepared:
    """Pad and lay out the inputs. ``dt_p`` is the processed fp32 dt (b, T, H): padded positions
    get dt = 0 *after* processing (decay 1, no contribution). B and C are cast to x's dtype
    (dot operands must share a dtype)."""
    pads4 = {1: dims.tp, 3: dims.pp}
    cdt = x.dtype
    dt_k = jnp.transpose(pad_axes(dt_p.astype(jnp.float32), {1: dims.tp}), (0, 2, 1))
    lam = chunk_lam(dt_k, A, dims.q)
    seg = relative_segments(seq_idx, dims)
    if D is None:
        d = jnp.zeros((dims.h, dims.pp), jnp.float32)
    else:
        d = D.astype(jnp.float32)
        d = jnp.broadcast_to(d[:, None], (dims.h, dims.p)) if d.ndim == 1 else d
        d = pad_axes(d, {1: dims.pp})
    if h0 is None:
        h0k = jnp.zeros((dims.b, dims.h, dims.pp, dims.np_), jnp.float32)
    else:
        h0k = pad_axes(h0.astype(jnp.float32), {2: dims.pp, 3: dims.np_})
    return Prepared(
        x=pad_axes(x, pads4),
        B=pad_axes(B.astype(cdt), {1: dims.tp, 3: dims.np_}),
        C=pad_axes(C.astype(cdt), {1: dims.tp, 3: dims.np_}),
        dt=dt_k,
        lam=lam,
        seg=seg,
        decay=chunk_decay(lam, seg, dims),
        D=d,
        z=None if z is None else pad_axes(z, pads4),
        h0=h0k,
    )


def default_num_warps(dims: Dims) -> int:
    """Triton warps per program: 4 for small tiles, 8 from 64 x 128 tiles up (untuned)."""
    return 4 if dims.q * max(dims.pp, dims.np_) < 64 * 128 else 8


__all__ = [
    "Dims",
    "Prepared",
    "block_size",
    "chunk_decay",
    "chunk_lam",
    "default_num_warps",
    "make_dims",
    "pad_axes",
    "prepare",
    "relative_segments",
]
