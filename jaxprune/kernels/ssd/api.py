"""Public Mamba2 SSD op with mamba_ssm's `mamba_chunk_scan_combined` interface."""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp

from jaxprune.config import SSD_IMPLS
from jaxprune.errors import UserError
from jaxprune.kernels.ssd.reference import process_dt, ssd_chunked
from jaxprune.kernels.ssd.xla import internal_chunk, ssd_xla

try:
    from jaxprune.kernels.ssd.pallas_triton import ssd_pallas
except ImportError as err:  # a jax without Pallas' Triton module
    ssd_pallas = None
    _PALLAS_IMPORT_ERROR: ImportError | None = err
else:
    _PALLAS_IMPORT_ERROR = None

Array = jax.Array

#: The implementations checked on each backend (values and every gradient against the
#: sequential oracle, on that backend's hardware), in order of preference; "auto" takes the
#: first one available. The Pallas kernels have run only in the Pallas interpreter (CPU) and
#: been lowered to Triton IR, never compiled or run on a GPU, so they are listed nowhere:
#: ``impl="pallas"`` opts in. Add "pallas" to "gpu" once a GPU run of
#: tests/kernels/test_ssd_pallas.py::TestSsdPallas has passed. "xla" (`xla.ssd_xla`, the
#: scan over chunks) is pure jnp/lax, but has been checked and timed on CPU only (on a GPU its
#: default-precision dots may run in TF32, and a sequential chunk loop may be slower there).
VERIFIED: dict[str, tuple[str, ...]] = {
    "cpu": ("xla", "reference"),
    "gpu": ("reference",),
    "tpu": ("reference",),
}


def resolve_impl(impl: str, backend: str | None = None) -> str:
    """Validate ``impl`` (one of ``SSD_IMPLS``); "auto" becomes the first implementation in
    ``VERIFIED[backend]`` that imports ("reference" on a backend not listed). ``backend``
    defaults to ``jax.default_backend()``."""
    if impl not in SSD_IMPLS:
        raise UserError(f"ssd impl must be one of {SSD_IMPLS}, got {impl!r}")
    if impl == "auto":
        backend = jax.default_backend() if backend is None else backend
        for cand in VERIFIED.get(backend, ()):
            if cand != "pallas" or ssd_pallas is not None:
                return cand
        return "reference"
    if impl == "pallas" and ssd_pallas is None:
        raise UserError(
            f"impl='pallas': the Pallas SSD kernels failed to import: {_PALLAS_IMPORT_ERROR}"
        )
    return impl


def _check_shape(name: str, arr: Array, expected: tuple[int, ...]) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(arr.shape)}")


def _validate(
    x: Array,
    dt: Array,
    A: Array,
    B: Array,
    C: Array,
    chunk_size: int,
    D: Array | None,
    z: Array | None,
    dt_bias: Array | None,
    dt_limit: tuple[float, float],
    initial_states: Array | None,
    seq_idx: Array | None,
) -> None:
    try:
        q = operator.index(chunk_size)
    except TypeError:
        q = 0
    if isinstance(chunk_size, bool) or q <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (batch, seqlen, nheads, headdim), got {x.shape}")
    b, seqlen, h, p = x.shape
    if B.ndim != 4:
        raise ValueError(f"B must have shape (batch, seqlen, ngroups, dstate), got {B.shape}")
    g, n = B.shape[2], B.shape[3]
    if g == 0 or h % g != 0:
        raise ValueError(f"nheads ({h}) must be divisible by ngroups ({g})")
    _check_shape("dt", dt, (b, seqlen, h))
    _check_shape("A", A, (h,))
    _check_shape("B", B, (b, seqlen, g, n))
    _check_shape("C", C, (b, seqlen, g, n))
    if D is not None and tuple(D.shape) not in ((h,), (h, p)):
        raise ValueError(f"D must have shape ({h},) or ({h}, {p}), got {tuple(D.shape)}")
    if z is not None:
        _check_shape("z", z, (b, seqlen, h, p))
    if dt_bias is not None:
        _check_shape("dt_bias", dt_bias, (h,))
    if len(dt_limit) != 2 or not dt_limit[0] <= dt_limit[1]:
        raise ValueError(f"dt_limit must be a (low, high) pair with low <= high, got {dt_limit}")
    if initial_states is not None:
        _check_shape("initial_states", initial_states, (b, h, p, n))
    if seq_idx is not None:
        _check_shape("seq_idx", seq_idx, (b, seqlen))
        if not jnp.issubdtype(seq_idx.dtype, jnp.integer):
            raise ValueError(f"seq_idx must have an integer dtype, got {seq_idx.dtype}")


def mamba_chunk_scan(
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
    return_final_states: bool = False,
    impl: str = "auto",
) -> Array | tuple[Array, Array]:
    """Mamba2 SSD scan: y = SSD(x, process_dt(dt), A, B, C) + D * x, then * silu(z) if given.

    Shapes: x (b, T, H, P), dt (b, T, H) raw, A (H,), B/C (b, T, G, N), D (H,) or (H, P),
    z (b, T, H, P), dt_bias (H,), initial_states (b, H, P, N), seq_idx (b, T) int.
    Computes in fp32 and returns y in x's dtype, or (y, final_states (b, H, P, N) fp32) when
    ``return_final_states``.

    ``impl``: "reference" is the pure-JAX chunked scan (`reference.ssd_chunked`, plain
    autodiff); "xla" the faster pure-JAX scan over chunks (`xla.ssd_xla`, rematerialised
    per chunk; on CPU it runs its own chunk size `xla.CPU_CHUNK`, a numerical no-op);
    "pallas" the Pallas kernels with a Pallas backward (`pallas_triton.ssd_pallas`,
    Triton lowering on GPU; on other backends they run in the Pallas interpreter, which is
    slow and meant for checking only); "auto" picks an implementation verified on the running
    backend (``VERIFIED``: "xla" on CPU, "reference" elsewhere until a GPU run has checked the
    Pallas kernels, so "pallas" is opt-in).
    """
    impl = resolve_impl(impl)
    _validate(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_limit, initial_states, seq_idx)
    if impl == "pallas":
        y, final_states = ssd_pallas(
            x,
            dt,
            A,
            B,
            C,
            chunk_size,
            D=D,
            z=z,
            dt_bias=dt_bias,
            dt_softplus=dt_softplus,
            dt_limit=dt_limit,
            initial_states=initial_states,
            seq_idx=seq_idx,
            interpret=jax.default_backend() != "gpu",
        )
        return (y, final_states) if return_final_states else y

    f32 = jnp.float32
    dt_p = process_dt(dt, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit)
    if impl == "xla":
        q = internal_chunk(chunk_size)
        y, final_states = ssd_xla(
            x, dt_p, A, B, C, q, initial_states=initial_states, seq_idx=seq_idx
        )
    else:
        y, final_states = ssd_chunked(
            x, dt_p, A, B, C, chunk_size, initial_states=initial_states, seq_idx=seq_idx
        )
    if D is not None:
        d = D.astype(f32)
        d = d[:, None] if d.ndim == 1 else d
        y = y + d * x.astype(f32)
    if z is not None:
        y = y * jax.nn.silu(z.astype(f32))
    y = y.astype(x.dtype)
    if return_final_states:
        return y, final_states
    return y
