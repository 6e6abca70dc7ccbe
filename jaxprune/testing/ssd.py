"""Fixtures for the SSD kernel checks (tests and experiments/gpu_check.py): packed-sequence
ids, random inputs, and the value-and-gradient comparison of an impl against another."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.kernels.ssd import mamba_chunk_scan


def segments_to_ids(lengths: list[int], first_id: int = 0) -> list[int]:
    """Segment lengths -> one id per position, counting up from ``first_id``."""
    return [first_id + i for i, n in enumerate(lengths) for _ in range(n)]


# T=37 (chunk 8: edges at 8, 16, 24, 32). Row 0: boundaries at 3, 5 (inside chunk 0), 8, 16
# (chunk edges), 21, 22 (a length-1 segment) and 31. Row 1 starts with id 2, so the initial
# state is dropped. Row 2 reuses ids (0, 1, 0, 1): chunks 0 and 1 both end in id 0 but must not
# pass state. Row 3 is constant 0 (no reset).
SEQ_IDX_37 = np.array(
    [
        segments_to_ids([3, 2, 3, 8, 5, 1, 9, 6]),
        segments_to_ids([8, 11, 1, 17], first_id=2),
        [0] * 6 + [1] * 6 + [0] * 12 + [1] * 13,
        [0] * 37,
    ],
    dtype=np.int32,
)


P, N = 5, 7
NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def make_inputs(seed: int, b: int, t: int, h: int, g: int) -> dict:
    """Random fp32 numpy inputs of the scan itself (P=5, N=7; no eager compiles): x,
    processed (positive) dt, negative A, B, C and an initial state h0."""
    rng = np.random.default_rng(seed)
    out = {
        "x": rng.standard_normal((b, t, h, P)),
        "dt": np.log1p(np.exp(rng.standard_normal((b, t, h)) - 1.0)),
        "A": -np.exp(0.5 * rng.standard_normal(h)),
        "B": rng.standard_normal((b, t, g, N)),
        "C": rng.standard_normal((b, t, g, N)),
        "h0": rng.standard_normal((b, h, P, N)),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def make_args(seed: int, b: int, t: int, h: int, g: int, p: int = P, n: int = N) -> dict:
    """Random fp32 inputs keyed by `NAMES`; dt is raw (softplus is applied by the op)."""
    rng = np.random.default_rng(seed)

    def f(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "x": f(b, t, h, p),
        "dt": f(b, t, h) - 1.0,
        "A": -np.exp(0.5 * f(h)),
        "B": f(b, t, g, n),
        "C": f(b, t, g, n),
        "D": f(h),
        "z": f(b, t, h, p),
        "dt_bias": 0.3 * f(h),
        "initial_states": f(b, h, p, n),
    }


def value_and_grads(impl: str, interpret: bool, args: dict, q: int, seq_idx, **kw):
    """(y, final, grads of every non-None input) for a random linear loss on y and final."""
    keys = [k for k in NAMES if args.get(k) is not None]
    first = args["x"]
    rng = np.random.default_rng(0)
    wy = rng.standard_normal(first.shape).astype(np.float32)
    ws = rng.standard_normal((first.shape[0], first.shape[2], first.shape[3], args["B"].shape[3]))

    def loss(*vals):
        a = dict(zip(keys, vals, strict=True))
        x, dt, A, B, C = (a.pop(k) for k in NAMES[:5])
        if impl == "pallas":
            from jaxprune.kernels.ssd.pallas_triton import ssd_pallas

            y, s = ssd_pallas(x, dt, A, B, C, q, seq_idx=seq_idx, interpret=interpret, **a, **kw)
        else:
            y, s = mamba_chunk_scan(
                x, dt, A, B, C, q, seq_idx=seq_idx, return_final_states=True, impl=impl, **a, **kw
            )
        val = jnp.sum(y.astype(jnp.float32) * wy) + jnp.sum(s * ws.astype(np.float32))
        return val, (y, s)

    fn = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(keys))), has_aux=True))
    (_, (y, s)), grads = fn(*(args[k] for k in keys))
    return np.asarray(y.astype(jnp.float32)), np.asarray(s), dict(zip(keys, grads, strict=True))


def max_err(a, e) -> tuple[float, float]:
    a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
    return float(np.abs(a - e).max()), float(np.abs(e).max())


def errors(got: tuple, want: tuple) -> dict[str, tuple[float, float]]:
    """{name: (max |got - want|, max |want|)} for y, the final state and every gradient
    (err = inf when shapes differ or ``got`` is not finite)."""
    (y, s, grads), (y_ref, s_ref, g_ref) = got, want
    assert grads.keys() == g_ref.keys()
    pairs = [("y", y, y_ref), ("final", s, s_ref)] + [(k, grads[k], g_ref[k]) for k in g_ref]
    out = {}
    for name, a, e in pairs:
        ok = np.asarray(a).shape == np.asarray(e).shape
        ok = ok and bool(np.all(np.isfinite(np.asarray(a, np.float32))))
        out[name] = max_err(a, e) if ok else (float("inf"), max_err(e, e)[1])
    return out


def assert_all_close(got: tuple, want: tuple, rel: float) -> None:
    """Values and every gradient: max |got - want| <= rel * max |want| (and all finite)."""
    for name, (err, scale) in errors(got, want).items():
        assert scale > 0.0, name
        assert err <= rel * scale, (name, err, scale)
