"""Tests for the pure-JAX Mamba2 SSD reference (chunked vs sequential, seq_idx, api, decode)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.kernels.ssd import (
    mamba_chunk_scan,
    process_dt,
    ssd_chunked,
    ssd_sequential,
    ssd_step,
)
from jaxprune.testing.ssd import SEQ_IDX_37, N, P, make_inputs, segments_to_ids

chunked = jax.jit(ssd_chunked, static_argnames=("chunk_size",))
sequential = jax.jit(ssd_sequential)
step = jax.jit(ssd_step)
api = jax.jit(
    mamba_chunk_scan,
    static_argnames=("chunk_size", "dt_softplus", "dt_limit", "return_final_states", "impl"),
)


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def segment_bounds(ids: np.ndarray) -> list[tuple[int, int]]:
    starts = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
    return list(zip(starts, starts[1:] + [len(ids)], strict=True))


def numpy_recurrence(x, dt, a, bm, cm, h0) -> tuple[np.ndarray, np.ndarray]:
    """Independent float64 oracle: B/C repeated per head, head h reading group h // (H // G)."""
    r = x.shape[2] // bm.shape[2]
    bh, ch = np.repeat(bm, r, axis=2), np.repeat(cm, r, axis=2)  # (b, T, H, N)
    state = h0.astype(np.float64)
    ys = []
    for i in range(x.shape[1]):
        decay = np.exp(dt[:, i] * a)[:, :, None, None]
        upd = (dt[:, i, :, None] * x[:, i])[..., None] * bh[:, i, :, None, :]
        state = decay * state + upd
        ys.append(np.einsum("bhpn,bhn->bhp", state, ch[:, i]))
    return np.stack(ys, axis=1), state


@pytest.mark.parametrize(
    ("t", "h", "g", "q", "use_h0"),
    [
        (1, 3, 1, 4, True),
        (7, 6, 3, 4, False),
        (13, 6, 6, 16, True),
        (32, 6, 1, 8, True),
    ],
)
def test_chunked_matches_sequential(t: int, h: int, g: int, q: int, use_h0: bool) -> None:
    d = make_inputs(t * 31 + h + g + q, 2, t, h, g)
    h0 = d["h0"] if use_h0 else None
    args = (d["x"], d["dt"], d["A"], d["B"], d["C"])
    y_ref, s_ref = sequential(*args, initial_states=h0)
    y, s = chunked(*args, chunk_size=q, initial_states=h0)
    assert y.shape == (2, t, h, P) and y.dtype == jnp.float32
    assert s.shape == (2, h, P, N) and s.dtype == jnp.float32
    assert np.abs(np.asarray(y_ref)).max() > 0.1
    y_np, s_np = numpy_recurrence(*args, d["h0"] if use_h0 else np.zeros_like(d["h0"]))
    assert_close(y_ref, y_np)
    assert_close(s_ref, s_np)
    assert_close(y, y_ref)
    assert_close(s, s_ref)


def _grads(fn, d: dict, seq_idx, wy, ws, **kw) -> tuple:
    def loss(x, dt, a, b, c, h0):
        y, s = fn(x, dt, a, b, c, initial_states=h0, seq_idx=seq_idx, **kw)
        return jnp.sum(y * wy) + jnp.sum(s * ws)

    return jax.jit(jax.grad(loss, argnums=tuple(range(6))))(
        d["x"], d["dt"], d["A"], d["B"], d["C"], d["h0"]
    )


@pytest.mark.parametrize(
    ("b", "t", "h", "g", "q", "with_seq"),
    [(2, 13, 6, 1, 4, False), (4, 37, 6, 3, 8, True)],
)
def test_gradients_match_sequential(b: int, t: int, h: int, g: int, q: int, with_seq: bool) -> None:
    d = make_inputs(100 + t, b, t, h, g)
    d["dt"][:, 2:6] = 0.0  # zero steps: decay exponents that are exactly 0 off the diagonal
    rng = np.random.default_rng(7)
    wy = rng.standard_normal((b, t, h, P)).astype(np.float32)
    ws = rng.standard_normal((b, h, P, N)).astype(np.float32)
    seq_idx = None
    if with_seq:
        seq_idx = SEQ_IDX_37
    g_ref = _grads(ssd_sequential, d, seq_idx, wy, ws)
    g_chk = _grads(ssd_chunked, d, seq_idx, wy, ws, chunk_size=q)
    for name, a, e in zip(("x", "dt", "A", "B", "C", "h0"), g_chk, g_ref, strict=True):
        a, e = np.asarray(a), np.asarray(e)
        scale = np.abs(e).max()
        assert scale > 0.0, name
        err = np.abs(a - e).max()
        assert err <= 1e-4 * scale, (name, err, scale)


def test_seq_idx_matches_sequential_and_separate_segments() -> None:
    b, t, h, g = 4, 37, 6, 3
    d = make_inputs(11, b, t, h, g)
    # Row 3 (no resets) gets row 0's inputs, so the effect of the resets is visible.
    for k in ("x", "dt", "B", "C", "h0"):
        d[k][3] = d[k][0]
    args = (d["x"], d["dt"], d["A"], d["B"], d["C"])
    seq_idx = SEQ_IDX_37
    y_ref, s_ref = sequential(*args, initial_states=d["h0"], seq_idx=seq_idx)
    for q in (1, 8, 16):
        y, s = chunked(*args, chunk_size=q, initial_states=d["h0"], seq_idx=seq_idx)
        assert_close(y, y_ref)
        assert_close(s, s_ref)
    y_np, s_np = np.asarray(y_ref), np.asarray(s_ref)
    assert np.abs(y_np[0, 3:] - y_np[3, 3:]).max() > 1e-2

    # Each segment run on its own (zero input outside it, no seq_idx): only a leading id-0
    # segment sees the initial state. All segments of all rows are batched into one call.
    rows, bounds = [], []
    for row in range(b):
        for start, end in segment_bounds(SEQ_IDX_37[row]):
            rows.append(row)
            bounds.append((start, end))
    sel = np.asarray(rows)
    inside = np.zeros((len(rows), t), np.float32)
    use_h0 = np.zeros((len(rows),), np.float32)
    for i, (start, end) in enumerate(bounds):
        inside[i, start:end] = 1.0
        use_h0[i] = float(start == 0 and SEQ_IDX_37[rows[i], 0] == 0)
    y_seg, s_seg = sequential(
        d["x"][sel] * inside[:, :, None, None],
        d["dt"][sel],
        d["A"],
        d["B"][sel],
        d["C"][sel],
        initial_states=d["h0"][sel] * use_h0[:, None, None, None],
    )
    y_seg, s_seg = np.asarray(y_seg), np.asarray(s_seg)
    for i, (start, end) in enumerate(bounds):
        assert_close(y_np[rows[i], start:end], y_seg[i, start:end])
        if end == t:
            assert_close(s_np[rows[i]], s_seg[i])


def test_ssd_step_matches_sequential() -> None:
    t, h, g = 13, 6, 6
    d = make_inputs(21, 2, t, h, g)
    y_ref, s_ref = sequential(d["x"], d["dt"], d["A"], d["B"], d["C"], initial_states=d["h0"])
    state = d["h0"]
    for i in range(t):
        y_i, state = step(state, d["x"][:, i], d["dt"][:, i], d["A"], d["B"][:, i], d["C"][:, i])
        assert y_i.shape == (2, h, P) and y_i.dtype == jnp.float32
        assert_close(y_i, np.asarray(y_ref)[:, i])
    assert state.shape == (2, h, P, N) and state.dtype == jnp.float32
    assert_close(state, s_ref)


def test_process_dt() -> None:
    raw = np.array([-30.0, -2.0, 0.0, 1.5, 19.0, 20.0, 21.0, 50.0], np.float32)
    bias = np.full((8,), 0.5, np.float32)
    limit = (0.1, 2.0)

    @jax.jit
    def run(v):
        def f(u):
            return jnp.sum(process_dt(u, bias, dt_softplus=True, dt_limit=limit))

        return (
            process_dt(v, dt_softplus=True),
            jax.nn.softplus(v),
            process_dt(v, bias),
            process_dt(v, bias, dt_softplus=True, dt_limit=limit),
            jax.grad(f)(v),
            jax.grad(f)(jnp.full_like(v, 1e4)),
        )

    plain, softplus, biased, val, grad, grad_big = (np.asarray(o) for o in run(raw))
    assert plain.dtype == np.float32
    assert_close(plain[:6], softplus[:6], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(plain[6:], raw[6:])  # identity above the threshold
    np.testing.assert_array_equal(biased, np.clip(raw + 0.5, 0.0, None))
    assert val.min() == pytest.approx(0.1) and val.max() == pytest.approx(2.0)
    inside = (val > 0.1) & (val < 2.0)
    assert inside.sum() == 2 and np.all(grad[inside] > 0) and np.all(grad[~inside] == 0)
    assert_close(grad[1], 1.0 / (1.0 + np.exp(-(raw[1] + 0.5))), rtol=1e-6)
    assert np.all(np.isfinite(grad_big))


@jax.jit
def _api_direct(d: dict, dmat, z, bias) -> tuple:
    dt_p = process_dt(d["dt_raw"], bias, dt_softplus=True, dt_limit=(0.05, 0.6))
    y, s = ssd_sequential(d["x"], dt_p, d["A"], d["B"], d["C"], initial_states=d["h0"])
    dm = dmat[:, None] if dmat.ndim == 1 else dmat
    y = y + dm * d["x"]
    if z is not None:
        y = y * (z * jax.nn.sigmoid(z))
    return y, s


@pytest.mark.parametrize(("d_shape", "gate"), [("h", False), ("hp", True)])
def test_api_matches_direct_computation(d_shape: str, gate: bool) -> None:
    t, h, g, q = 13, 6, 3, 8
    d = make_inputs(31, 2, t, h, g)
    rng = np.random.default_rng(32)
    d["dt_raw"] = (rng.standard_normal((2, t, h)) - 1.0).astype(np.float32)
    bias = (0.5 * rng.standard_normal(h)).astype(np.float32)
    dmat = rng.standard_normal((h,) if d_shape == "h" else (h, P)).astype(np.float32)
    z = rng.standard_normal((2, t, h, P)).astype(np.float32) if gate else None
    kw = {"D": dmat, "z": z, "dt_bias": bias, "dt_softplus": True, "dt_limit": (0.05, 0.6)}
    args = (d["x"], d["dt_raw"], d["A"], d["B"], d["C"])
    y_ref, s_ref = _api_direct(d, dmat, z, bias)
    if gate:
        # Without return_final_states only y comes back; "reference" is the "auto" path.
        y = api(*args, q, initial_states=d["h0"], impl="reference", **kw)
        assert isinstance(y, jax.Array)
    else:
        y, s = api(*args, q, initial_states=d["h0"], return_final_states=True, **kw)
        assert s.dtype == jnp.float32
        assert_close(s, s_ref)
    assert y.dtype == jnp.float32
    assert_close(y, y_ref)


def test_api_bf16_matches_fp32() -> None:
    b, t, h, g, q = 2, 37, 6, 3, 16
    rng = np.random.default_rng(41)

    def arr(v):
        return np.asarray(v, np.float32)

    x = arr(rng.standard_normal((b, t, h, P)))
    dt = arr(rng.standard_normal((b, t, h)) - 4.0)
    a = arr(-0.1 * rng.uniform(size=h))
    bm = arr(rng.standard_normal((b, t, g, N)) / 5)
    cm = arr(rng.standard_normal((b, t, g, N)))
    dm = arr(rng.standard_normal(h))
    z = arr(rng.standard_normal((b, t, h, P)))
    kw = {"chunk_size": q, "dt_softplus": True, "return_final_states": True}
    y32, s32 = api(x, dt, a, bm, cm, D=dm, z=z, **kw)
    lo = [v.astype(jnp.bfloat16) for v in (x, dt, bm, cm, z)]
    y16, s16 = api(lo[0], lo[1], a, lo[2], lo[3], D=dm, z=lo[4], **kw)
    assert y16.dtype == jnp.bfloat16 and s16.dtype == jnp.float32
    assert_close(np.asarray(y16).astype(np.float32), y32, rtol=1e-2, atol=3e-3)
    assert_close(s16, s32, rtol=1e-2, atol=3e-3)


def test_large_decay_long_sequence_is_finite() -> None:
    b, t, h, g, q = 2, 257, 3, 1, 64
    d = make_inputs(51, b, t, h, g)
    rng = np.random.default_rng(52)
    dt = rng.uniform(0.0, 1.0, (b, t, h)).astype(np.float32)
    a = np.array([-50.0, -5.0, -0.01], np.float32)
    seq_idx = np.array([segments_to_ids([60, 4, 100, 93])] * b, np.int32)
    w = rng.standard_normal((b, t, h, P)).astype(np.float32)
    args = (d["x"], dt, a, d["B"], d["C"], d["h0"])

    def loss(x, dt_, a_, bm, cm, h0):
        y, s = ssd_chunked(x, dt_, a_, bm, cm, q, initial_states=h0, seq_idx=seq_idx)
        return jnp.sum(y * w) + jnp.sum(s), (y, s)

    (val, (y, s)), grads = jax.jit(jax.value_and_grad(loss, range(6), has_aux=True))(*args)
    assert np.isfinite(float(val))
    for gr in grads:
        assert np.all(np.isfinite(np.asarray(gr)))
    y_ref, s_ref = sequential(*args[:5], initial_states=d["h0"], seq_idx=seq_idx)
    assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert_close(s, s_ref, rtol=1e-4, atol=1e-4)

    def api_loss(dt_raw):
        y = mamba_chunk_scan(d["x"], dt_raw, a, d["B"], d["C"], q, dt_softplus=True)
        return jnp.sum(y * w)

    dt_raw = (3.0 * rng.standard_normal((b, t, h))).astype(np.float32)
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(api_loss))(dt_raw))))


def _valid_args() -> dict:
    d = make_inputs(61, 2, 9, 6, 3)
    return {"x": d["x"], "dt": d["dt"], "A": d["A"], "B": d["B"], "C": d["C"], "chunk_size": 4}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"B": np.zeros((2, 9, 4, N)), "C": np.zeros((2, 9, 4, N))}, "divisible by ngroups"),
        ({"dt": np.zeros((2, 8, 6))}, "dt must have shape"),
        ({"A": np.zeros((3,))}, "A must have shape"),
        ({"C": np.zeros((1, 9, 3, N))}, "C must have shape"),
        ({"x": np.zeros((2, 9, 6))}, "x must have shape"),
        ({"D": np.zeros((6, 4))}, "D must have shape"),
        ({"z": np.zeros((2, 9, 6, 4))}, "z must have shape"),
        ({"dt_bias": np.zeros((3,))}, "dt_bias must have shape"),
        ({"initial_states": np.zeros((2, 6, P, 3))}, "initial_states must have shape"),
        ({"seq_idx": np.zeros((2, 8), np.int32)}, "seq_idx must have shape"),
        ({"seq_idx": np.zeros((2, 9), np.float32)}, "integer dtype"),
        ({"chunk_size": 0}, "chunk_size must be a positive int"),
        ({"chunk_size": 2.5}, "chunk_size must be a positive int"),
        ({"dt_limit": (1.0, 0.5)}, "dt_limit"),
        ({"impl": "triton"}, "impl must be one of"),
    ],
)
def test_api_errors(change: dict, match: str) -> None:
    kwargs = _valid_args()
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        mamba_chunk_scan(**kwargs)


def test_reference_chunk_size_error() -> None:
    d = make_inputs(62, 1, 4, 3, 1)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ssd_chunked(d["x"], d["dt"], d["A"], d["B"], d["C"], 0)
