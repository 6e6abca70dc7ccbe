"""The scan-over-chunks SSD (`xla.ssd_xla`, impl="xla") against the reference and the
sequential oracle: values, final states and every gradient, with groups, T not a multiple of
the chunk, packed documents starting mid-chunk and initial states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.kernels.ssd import mamba_chunk_scan, ssd_chunked, ssd_sequential
from jaxprune.kernels.ssd.xla import CPU_CHUNK, internal_chunk, ssd_xla
from jaxprune.testing.ssd import SEQ_IDX_37, N, P, make_inputs

ARGS = ("x", "dt", "A", "B", "C", "h0")


def value_and_grads(fn, d: dict, seq_idx, q: int | None) -> tuple:
    """(y, final state, grads of a loss on both w.r.t. x, dt, A, B, C, h0); jitted."""
    rng = np.random.default_rng(99)
    b, t, h, _ = d["x"].shape
    wy = jnp.asarray(rng.standard_normal((b, t, h, P)), jnp.float32)
    ws = jnp.asarray(rng.standard_normal((b, h, P, N)), jnp.float32)
    extra = {} if q is None else {"chunk_size": q}

    def run(x, dt, a, bm, cm, h0):
        return fn(x, dt, a, bm, cm, initial_states=h0, seq_idx=seq_idx, **extra)

    def loss(*args):
        y, s = run(*args)
        return jnp.sum(wy * jnp.sin(y)) + jnp.sum(ws * s)

    inputs = [d[k] for k in ARGS]
    y, s = jax.jit(run)(*inputs)
    grads = jax.jit(jax.grad(loss, argnums=tuple(range(6))))(*inputs)
    return y, s, grads


def assert_matches(got: tuple, want: tuple, rtol: float = 2e-5) -> None:
    """Values and each gradient equal up to rtol of that array's largest magnitude."""
    names = ("y", "final") + tuple(f"d{k}" for k in ARGS)
    flat_got = [got[0], got[1], *got[2]]
    flat_want = [want[0], want[1], *want[2]]
    for name, a, e in zip(names, flat_got, flat_want, strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert np.all(np.isfinite(a)), name
        scale = max(float(np.max(np.abs(e))), 1e-6)
        err = float(np.max(np.abs(a - e)))
        assert err <= rtol * scale, f"{name}: max abs error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize(("h", "g", "q"), [(3, 1, 8), (4, 2, 16), (6, 3, 32)])
def test_matches_the_reference_with_documents_and_initial_states(h, g, q):
    """T = 37 is not a multiple of any chunk; SEQ_IDX_37 has documents starting mid-chunk, at
    chunk edges, a length-1 document, reused ids and a leading non-zero id. Same chunk as the
    reference: equal up to fp32 rounding."""
    d = make_inputs(1, 4, 37, h, g)
    seq = jnp.asarray(SEQ_IDX_37)
    assert_matches(value_and_grads(ssd_xla, d, seq, q), value_and_grads(ssd_chunked, d, seq, q))


@pytest.mark.parametrize("seq_idx", [None, SEQ_IDX_37[:2, :37]])
def test_matches_the_sequential_oracle(seq_idx):
    """Against the time-step recurrence (the reference's own tolerance, 1e-4: longer chunks
    round differently); the hand-written backward included."""
    d = make_inputs(2, 2, 37, 4, 2)
    d["dt"][:, 2:6] = 0.0  # zero steps: decay exponents exactly 0 off the diagonal
    seq = None if seq_idx is None else jnp.asarray(seq_idx)
    got = value_and_grads(ssd_xla, d, seq, 16)
    assert_matches(got, value_and_grads(ssd_sequential, d, seq, None), rtol=1e-4)


def test_the_chunk_size_does_not_change_the_result():
    d = make_inputs(3, 2, 37, 4, 2)
    seq = jnp.asarray(SEQ_IDX_37[:2])
    got = value_and_grads(ssd_xla, d, seq, 4)
    assert_matches(got, value_and_grads(ssd_xla, d, seq, 64), rtol=1e-4)


def test_a_wrong_chunk_size_is_refused():
    d = make_inputs(4, 1, 8, 2, 1)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ssd_xla(d["x"], d["dt"], d["A"], d["B"], d["C"], 0)


def test_internal_chunk_is_the_cpu_choice_only_on_cpu():
    assert internal_chunk(128, "cpu") == CPU_CHUNK
    assert internal_chunk(128, "gpu") == 128
    assert internal_chunk(256, "tpu") == 256


def test_api_impl_xla_matches_reference_with_d_z_and_dt_processing():
    """D (H, P), z gate, dt_bias, softplus and a dt clamp pass through impl="xla" with the same
    values and gradients as impl="reference" (chunk 8 asked, CPU_CHUNK used inside)."""
    rng = np.random.default_rng(5)
    d = make_inputs(5, 2, 29, 4, 2)
    d["dt"] = rng.standard_normal((2, 29, 4)).astype(np.float32)  # raw dt
    extra = {
        "D": rng.standard_normal((4, P)).astype(np.float32),
        "z": rng.standard_normal((2, 29, 4, P)).astype(np.float32),
        "dt_bias": rng.standard_normal(4).astype(np.float32),
    }
    seq = jnp.asarray(SEQ_IDX_37[:2, :29])

    def run(impl, x, dt, a, bm, cm, h0, dd, z, bias):
        return mamba_chunk_scan(
            x,
            dt,
            a,
            bm,
            cm,
            8,
            D=dd,
            z=z,
            dt_bias=bias,
            dt_softplus=True,
            dt_limit=(0.05, 2.0),
            initial_states=h0,
            seq_idx=seq,
            return_final_states=True,
            impl=impl,
        )

    def loss(impl, *args):
        y, s = run(impl, *args)
        return jnp.sum(jnp.cos(y)) + jnp.sum(s * s)

    inputs = [d[k] for k in ARGS] + [extra["D"], extra["z"], extra["dt_bias"]]
    out = {}
    for impl in ("xla", "reference"):
        y, s = jax.jit(lambda *a, impl=impl: run(impl, *a))(*inputs)
        grads = jax.jit(jax.grad(lambda *a, impl=impl: loss(impl, *a), range(9)))(*inputs)
        out[impl] = (y, s, grads)
    got, want = out["xla"], out["reference"]
    assert_matches((got[0], got[1], got[2][:6]), (want[0], want[1], want[2][:6]))
    for name, a, e in zip(("dD", "dz", "ddt_bias"), got[2][6:], want[2][6:], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=2e-5, atol=2e-5, err_msg=name)
    assert not np.allclose(np.asarray(got[2][8]), 0.0)  # the bias gradient is exercised
