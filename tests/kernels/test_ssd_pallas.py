"""Pallas SSD kernels against the pure-JAX reference: values and the gradient of every input.

`TestSsdPallas` runs the compiled (Triton-lowered) kernels and is skipped without a GPU;
`TestSsdPallasInterpret` runs the same tests in the Pallas interpreter on any backend. Shapes
are tiny (grid <= 48 programs) because the interpreter is slow. P = 5 and N = 7 exercise the
padding to power-of-two blocks; chunk sizes 8 / 12 run as 16-row kernel chunks.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.kernels.ssd import mamba_chunk_scan
from jaxprune.kernels.ssd.api import VERIFIED, resolve_impl
from jaxprune.kernels.ssd.pallas_triton import ssd_pallas
from jaxprune.testing.ssd import (
    NAMES,
    SEQ_IDX_37,
    N,
    P,
    assert_all_close,
    make_args,
    max_err,
    segments_to_ids,
    value_and_grads,
)

ON_GPU = jax.default_backend() == "gpu"

CASES = {
    # G < H, T % Q != 0, every option, several segments (boundaries inside and at chunk edges).
    "groups_seq_all_options": dict(b=4, t=37, h=4, g=2, q=8, seq=True, d="h", gate=True),
    # G == H, D per channel, chunk size not a power of two; no initial state, seq_idx, z, bias.
    "heads_eq_groups_plain": dict(b=2, t=40, h=3, g=3, q=12, seq=False, d="hp", gate=False),
    # G == 1, power-of-two P / N / Q (no padding at all), T a multiple of Q.
    "one_group_no_padding": dict(b=1, t=64, h=2, g=1, q=16, seq=False, d=None, gate=True, p=16),
}


class TestSsdPallas:
    INTERPRET = False

    def setup_method(self) -> None:
        if not self.INTERPRET and not ON_GPU:
            pytest.skip("compiled Pallas kernels need a GPU; the Interpret variant covers CPU")

    @pytest.mark.slow
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_matches_reference_fp32(self, case: str) -> None:
        c = dict(CASES[case])
        p = c.pop("p", P)
        args = make_args(len(case), c["b"], c["t"], c["h"], c["g"], p=p, n=p if p != P else N)
        if c["d"] == "hp":
            args["D"] = np.tile(args["D"][:, None], (1, p)) * np.linspace(0.5, 1.5, p, dtype="f4")
        elif c["d"] is None:
            args["D"] = None
        if not c["gate"]:
            args["z"] = None
        seq = SEQ_IDX_37 if c["seq"] else None
        if not c["seq"]:
            args["initial_states"] = None
        if c["d"] == "hp":
            args["dt_bias"] = None
        kw = {"dt_softplus": True, "dt_limit": (0.0, 4.0)}
        got = value_and_grads("pallas", self.INTERPRET, args, c["q"], seq, **kw)
        want = value_and_grads("reference", False, args, c["q"], seq, **kw)
        assert_all_close(got, want, rel=2e-5)

    @pytest.mark.slow
    def test_bf16_within_mamba_tolerance(self) -> None:
        """mamba_ssm's test scaling (B / 5, A = -0.1 rand, dt = softplus(randn - 4)); the fp32
        reference sees the same bf16-rounded inputs. Values at rtol 1e-2 / atol 3e-3 elementwise,
        gradients (bf16-rounded themselves) within 3e-2 of their max magnitude."""
        b, t, h, g, p, n, q = 2, 37, 4, 2, 24, 40, 16
        rng = np.random.default_rng(5)
        args = make_args(5, b, t, h, g, p=p, n=n)
        args.update(A=(-0.1 * rng.uniform(size=h)).astype("f4"), initial_states=None)
        args["dt"] = args["dt"] - 3.0
        args["B"] = args["B"] / 5
        lo = {k: v.astype(jnp.bfloat16) for k, v in args.items() if k in ("x", "dt", "B", "C", "z")}
        ref_in = {**args, **{k: np.asarray(v.astype(jnp.float32)) for k, v in lo.items()}}
        seq = np.array([segments_to_ids([10, 20, 7]), segments_to_ids([5, 32], 3)], np.int32)
        got = value_and_grads("pallas", self.INTERPRET, {**args, **lo}, q, seq, dt_softplus=True)
        want = value_and_grads("reference", False, ref_in, q, seq, dt_softplus=True)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-2, atol=3e-3)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-2, atol=3e-3)
        for k, e in want[2].items():
            assert got[2][k].dtype == lo[k].dtype if k in lo else got[2][k].dtype == jnp.float32
            err, scale = max_err(got[2][k], e)
            assert err <= 3e-2 * scale, (k, err, scale)

    @pytest.mark.slow
    def test_large_decay_long_sequence_is_finite(self) -> None:
        """|A| up to 50 with dt up to ~3 (cumulative log-decays far below exp's range), 257 steps,
        several segments: values and gradients finite and equal to the reference."""
        b, t, h, g, q = 1, 257, 3, 1, 64
        args = make_args(7, b, t, h, g)
        rng = np.random.default_rng(8)
        args["A"] = np.array([-50.0, -5.0, -0.01], np.float32)
        args["dt"] = (3.0 * rng.standard_normal((b, t, h))).astype(np.float32)
        seq = np.array([segments_to_ids([60, 4, 100, 93])], np.int32)
        got = value_and_grads("pallas", self.INTERPRET, args, q, seq, dt_softplus=True)
        want = value_and_grads("reference", False, args, q, seq, dt_softplus=True)
        assert_all_close(got, want, rel=2e-5)

    def test_api_dispatch(self) -> None:
        """impl="pallas" goes through the kernels (interpreted off-GPU); "auto" only where
        ``VERIFIED`` lists Pallas for the backend (nowhere until a GPU run has checked it)."""
        args = make_args(9, 1, 20, 2, 1)
        x, dt, A, B, C = (args[k] for k in NAMES[:5])

        def run(impl):
            return mamba_chunk_scan(x, dt, A, B, C, 16, D=args["D"], dt_softplus=True, impl=impl)

        jaxpr = str(jax.make_jaxpr(lambda: run("auto"))())
        first = VERIFIED.get(jax.default_backend(), ("reference",))[0]
        auto_pallas = first == "pallas"
        assert ("pallas_call" in jaxpr) == auto_pallas
        assert resolve_impl("auto") == first
        y = jax.jit(lambda: run("pallas"))()
        y_ref = jax.jit(lambda: run("reference"))()
        np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)


class TestSsdPallasInterpret(TestSsdPallas):
    INTERPRET = True


def test_lowers_to_triton_for_cuda() -> None:
    """The forward and backward lower for CUDA on any jaxlib: Pallas -> Triton IR checks
    power-of-two block shapes and that every primitive has a Triton lowering. Compiling that
    IR to PTX needs the CUDA plugin and a GPU (`TestSsdPallas` does that on hardware)."""
    b, t, h, g, p, n, q = 1, 200, 4, 2, 64, 128, 128
    sd = jax.ShapeDtypeStruct
    bf, f4 = jnp.bfloat16, jnp.float32
    shapes = (
        sd((b, t, h, p), bf),
        sd((b, t, h), bf),
        sd((h,), f4),
        sd((b, t, g, n), bf),
        sd((b, t, g, n), bf),
        sd((h,), f4),
        sd((b, t, h, p), bf),
        sd((h,), f4),
        sd((b, h, p, n), f4),
        sd((b, t), jnp.int32),
    )

    def loss(x, dt, A, B, C, D, z, bias, h0, seq):
        y, s = ssd_pallas(x, dt, A, B, C, q, D=D, z=z, dt_bias=bias, initial_states=h0, seq_idx=seq)
        return jnp.sum(y.astype(f4)) + jnp.sum(s)

    grad = jax.jit(jax.grad(loss, argnums=tuple(range(9))))
    text = grad.trace(*shapes).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 7  # forward: 3 kernels; backward: 2 recomputed + 2
    names = set(re.findall(r'name = "(ssd_[a-z_]+)"', text))
    assert names == {
        "ssd_chunk_cb",
        "ssd_chunk_state",
        "ssd_chunk_scan",
        "ssd_bwd_dprev",
        "ssd_bwd_chunk",
    }
