"""GPU check sections for the Mamba2 SSD scan: values and gradients of every implementation
against the reference (the checks of tests/kernels/test_ssd_pallas.py, via
`jaxprune.testing.ssd`), and forward / forward+backward timings at Nemotron-H-8B layer shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_ssd import SHAPES, cost, jax_fns, make_inputs, torch_fns
from experiments.gpu_timing import ceilings, rate, time_interleaved
from jaxprune.config import SSD_IMPLS
from jaxprune.kernels.ssd import process_dt, ssd_chunked, ssd_sequential
from jaxprune.testing.ssd import SEQ_IDX_37, errors, make_args, segments_to_ids, value_and_grads

REL_TOL = 2e-5  # fp32, as TestSsdPallas: max |got - want| <= REL_TOL * max |want|
OPTIONS = {"dt_softplus": True, "dt_limit": (0.0, 4.0)}


def impls() -> list[str]:
    """Every implementation in ``SSD_IMPLS`` but "auto" (the reference first)."""
    rest = [i for i in SSD_IMPLS if i not in ("auto", "reference")]
    return ["reference", *rest]


def check_shapes(dry: bool) -> dict[str, dict]:
    """Two shapes: the test suite's packed case with every option (P=5, N=7 padded, chunk 8,
    segment boundaries inside and at chunk edges), and a larger one (8B head dims, 16 heads,
    T not a multiple of the chunk; a small grid on a dry run for the Pallas interpreter)."""
    small = dict(b=4, t=37, h=4, g=2, p=5, n=7, q=8, seq=SEQ_IDX_37)
    if dry:
        seq = np.array([segments_to_ids([30, 10])], np.int32)
        large = dict(b=1, t=40, h=3, g=3, p=16, n=16, q=16, seq=seq)
    else:
        rows = [segments_to_ids([700, 1, 360]), segments_to_ids([128, 933], first_id=1)]
        large = dict(b=2, t=1061, h=16, g=2, p=64, n=128, q=128, seq=np.array(rows, np.int32))
    return {"packed_all_options": small, "8b_dims_T1061" if not dry else "dry_large": large}


def _sequential_check(case: dict) -> dict:
    """The chunked reference against the `lax.scan` recurrence (values and final state)."""
    a = make_args(1, case["b"], case["t"], case["h"], case["g"], p=case["p"], n=case["n"])
    seq = jnp.asarray(case["seq"])
    dtp = process_dt(jnp.asarray(a["dt"]), jnp.asarray(a["dt_bias"]), **OPTIONS)
    y_seq, s_seq = ssd_sequential(
        a["x"], dtp, a["A"], a["B"], a["C"], initial_states=a["initial_states"], seq_idx=seq
    )
    y, s = jax.jit(
        lambda x, d, A, B, C, h0, sq: ssd_chunked(
            x, d, A, B, C, case["q"], initial_states=h0, seq_idx=sq
        )
    )(a["x"], dtp, a["A"], a["B"], a["C"], a["initial_states"], seq)
    errs = errors((y, s, {}), (y_seq, s_seq, {}))
    return _verdict(errs, 1e-4)


def _verdict(errs: dict, rel: float) -> dict:
    rel_errs = {k: (e / s if s > 0 else float("inf")) for k, (e, s) in errs.items()}
    worst = max(rel_errs, key=rel_errs.get)
    return {
        "passed": all(v <= rel for v in rel_errs.values()),
        "tolerance": rel,
        "worst": worst,
        "worst_rel_err": rel_errs[worst],
        "rel_err": rel_errs,
    }


def ssd_check(dry: bool) -> dict:
    """Each impl vs the reference, values and the gradient of every input, at two shapes;
    and the reference vs the sequential recurrence."""
    on_gpu = jax.default_backend() == "gpu"
    rows = []
    for name, case in check_shapes(dry).items():
        c = dict(case)
        args = make_args(len(name), c["b"], c["t"], c["h"], c["g"], p=c["p"], n=c["n"])
        want = value_and_grads("reference", False, args, c["q"], c["seq"], **OPTIONS)
        rows.append({"shape": name, "impl": "reference-vs-sequential", **_sequential_check(c)})
        for impl in impls()[1:]:
            row = {"shape": name, "impl": impl, "compiled": impl != "pallas" or on_gpu}
            try:
                got = value_and_grads(impl, not on_gpu, args, c["q"], c["seq"], **OPTIONS)
                row.update(_verdict(errors(got, want), REL_TOL))
            except Exception as err:  # a broken kernel: record it, check the others
                row.update(passed=False, error=f"{type(err).__name__}: {str(err)[:300]}")
            rows.append(row)
    shape_desc = {
        k: {kk: v for kk, v in c.items() if kk != "seq"} for k, c in check_shapes(dry).items()
    }
    return {
        "rows": rows,
        "shapes": shape_desc,
        "options": {"dt_softplus": True, "dt_limit": [0, 4]},
    }


def timing_plan(dry: bool) -> tuple[tuple[int, int, int, int, int], list[int], object]:
    """(H, P, N, G, Q), sequence lengths, dtype: Nemotron-H-8B's layer at 2k and 8k in bf16;
    a dry run uses 4 heads, T = 256, fp32."""
    if dry:
        return (4, 16, 16, 2, 64), [256], jnp.float32
    return SHAPES["8b"], [2048, 8192], jnp.bfloat16


def _rolled(inputs: dict, k: int) -> dict:
    """Another input set of the same distribution (time axis rolled), a separate buffer."""
    if k == 0:
        return inputs
    return {n: (jnp.roll(v, 7 * k, axis=1) if v.ndim >= 3 else v) for n, v in inputs.items()}


def ssd_timing(dry: bool) -> dict:
    """Forward and forward+backward of every JAX impl (and mamba_ssm if importable)."""
    on_gpu = jax.default_backend() == "gpu"
    (h, p, n, g, q), seqlens, dtype = timing_plan(dry)
    names = [i for i in impls() if on_gpu or i != "pallas"]  # the interpreter is no timing
    ceil = ceilings(on_gpu)
    rows, notes = [], []
    if not on_gpu:
        notes.append("pallas not timed off-GPU (it would run in the Pallas interpreter)")
    sets = 1 if dry else 2
    for t in seqlens:
        base = make_inputs(h, p, n, g, t, dtype)
        inputs = [_rolled(base, k) for k in range(sets)]
        calls = {}
        for impl in names:
            f, fb = jax_fns(impl, q)
            calls[(impl, "fwd")] = (lambda i, f=f, a=inputs: f(a[i]), jax.block_until_ready)
            calls[(impl, "fwdbwd")] = (lambda i, g=fb, a=inputs: g(a[i]), jax.block_until_ready)
        torch = torch_fns(q, base) if on_gpu else None
        if torch is None:
            notes.append("mamba_ssm not timed: not importable (or no CUDA torch)")
        else:
            fwd, fwd_bwd, sync = torch
            calls[("mamba_ssm", "fwd")] = (lambda i, f=fwd: f(), sync)
            calls[("mamba_ssm", "fwdbwd")] = (lambda i, f=fwd_bwd: f(), sync)
        reps, rounds = (2, 1) if dry else (10, 3)
        res = time_interleaved(
            {f"{a}/{b}": v for (a, b), v in calls.items()},
            rounds=rounds,
            reps=reps,
            warmup=1 if dry else 3,
            sets=sets,
        )
        model = cost(h, p, n, g, q, t, jnp.dtype(dtype).itemsize)
        for key, r in res.items():
            impl, pas = key.split("/")
            tf = rate(model[f"{pas}_flops"], r.get("ms"))
            row = {"impl": impl, "pass": pas, "T": t, **r, "TFLOPs": tf}
            if tf is not None:
                row["pct_matmul"] = 100 * tf / ceil["matmul_TFLOPs"]
            rows.append(row)
    shape = {"H": h, "P": p, "N": n, "G": g, "Q": q, "b": 1, "dtype": jnp.dtype(dtype).name}
    return {"rows": rows, "shape": shape, "ceilings": ceil, "notes": sorted(set(notes))}
