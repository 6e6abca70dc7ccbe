"""Benchmark the Mamba2 SSD scan: Pallas kernels, the pure-JAX reference, mamba_ssm's Triton.

    python experiments/bench_ssd.py [--out runs/bench_ssd] [--shapes 8b,4b,2.7b]
        [--seqlens 2048,8192,32768] [--impls pallas,reference,mamba_ssm] [--heads H]
        [--dtype bfloat16] [--reps 20] [--warmup 3]

Layer shapes (b = 1): Nemotron-H-8B (H=128, P=64, N=128, G=8, Q=128), Nemotron-H-4B (H=112,
G=8, Q=128) and Mamba2-2.7B (H=80, G=1, Q=256). Each implementation is timed forward and
forward+backward (gradients of x, dt, A, B, C, D, dt_bias): warm-up calls, then the median (and
best) of ``--reps`` synchronised calls. Rates use the cost model of ssd.md section 9: forward
matmul FLOPs 2bT(GQN + HQP + 2HPN), fwd+bwd counted as 3.5x forward; bytes are the fused lower
bound (each input read once, each output written once). Both are shown against ceilings
measured here: a device-to-device copy (GB/s, read + write) and a large bf16 matmul (TFLOP/s).
Every impl is rated with the same chunked-SSD model counts, so the rates compare times (the
sequential scan does different arithmetic).

On a CPU the defaults shrink to ``--heads 16 --seqlens 1024 --impls reference,sequential
--dtype float32`` (about a minute on 2 cores); "sequential" is the `lax.scan` recurrence.
"pallas" on a CPU runs the interpreter: correct but very slow, so pick tiny shapes for it.
Writes ``results.json`` and ``results.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxprune.kernels.ssd import mamba_chunk_scan, process_dt, ssd_sequential

SHAPES = {  # name: (H, P, N, G, Q)
    "8b": (128, 64, 128, 8, 128),
    "4b": (112, 64, 128, 8, 128),
    "2.7b": (80, 64, 128, 1, 256),
}
BWD_FACTOR = 3.5  # fwd+bwd FLOPs / fwd FLOPs (ssd.md section 9: backward ~2.5x forward)


def timeit(fn: Callable[[], object], reps: int, warmup: int, sync: Callable) -> dict:
    """Median and best wall time (s) of ``reps`` synchronised calls after ``warmup`` calls."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "best_s": min(times)}


def ceilings(on_gpu: bool, reps: int) -> dict:
    """Measured device-to-device copy bandwidth (GB/s) and bf16 matmul rate (TFLOP/s)."""
    n_copy = (1 << 28) if on_gpu else (1 << 24)  # bf16 elements: 512 MiB / 32 MiB
    m = 8192 if on_gpu else 1024
    key = jax.random.key(0)
    a = jax.random.normal(key, (n_copy,), jnp.bfloat16)
    copy = jax.jit(lambda v: v + 1)
    t_copy = timeit(lambda: copy(a), reps, 2, jax.block_until_ready)["median_s"]
    x = jax.random.normal(key, (m, m), jnp.bfloat16)
    mm = jax.jit(lambda u, v: jnp.dot(u, v, preferred_element_type=jnp.bfloat16))
    t_mm = timeit(lambda: mm(x, x), reps, 2, jax.block_until_ready)["median_s"]
    return {"copy_GBps": 2 * 2 * n_copy / t_copy / 1e9, "matmul_TFLOPs": 2 * m**3 / t_mm / 1e12}


def cost(h: int, p: int, n: int, g: int, q: int, t: int, itemsize: int) -> dict:
    """Forward model FLOPs and fused lower-bound bytes (fwd, fwd+bwd), b = 1."""
    flops = 2 * t * (g * q * n + h * q * p + 2 * h * p * n)
    act = itemsize * t * (h * p + 2 * g * n + h)  # x, B, C, dt
    out = itemsize * t * h * p
    return {
        "fwd_flops": flops,
        "fwdbwd_flops": BWD_FACTOR * flops,
        "fwd_bytes": act + out,
        "fwdbwd_bytes": act + out + act + out + act,  # + re-read inputs, dy, write grads
    }


def make_inputs(h: int, p: int, n: int, g: int, t: int, dtype) -> dict:
    """mamba_ssm-style random inputs (raw dt, softplus applied by the op), b = 1."""
    ks = jax.random.split(jax.random.key(1), 6)
    return {
        "x": jax.random.normal(ks[0], (1, t, h, p), dtype),
        "dt": (jax.random.normal(ks[1], (1, t, h)) - 4.0).astype(dtype),
        "A": -jnp.exp(jax.random.uniform(ks[2], (h,), minval=0.0, maxval=2.77)),
        "B": (jax.random.normal(ks[3], (1, t, g, n)) / 5).astype(dtype),
        "C": jax.random.normal(ks[4], (1, t, g, n), dtype),
        "D": jnp.ones((h,), jnp.float32),
        "dt_bias": jax.random.uniform(ks[5], (h,), minval=-2.0, maxval=0.0),
    }


def jax_fns(impl: str, q: int) -> tuple[Callable, Callable]:
    """(forward, forward+backward) jitted functions of the input dict for a JAX impl."""

    def fwd(a: dict) -> jax.Array:
        if impl == "sequential":
            dtp = process_dt(a["dt"], a["dt_bias"], dt_softplus=True)
            y, _ = ssd_sequential(a["x"], dtp, a["A"], a["B"], a["C"])
            return (y + a["D"][:, None] * a["x"].astype(jnp.float32)).astype(a["x"].dtype)
        return mamba_chunk_scan(
            a["x"], a["dt"], a["A"], a["B"], a["C"], q, D=a["D"], dt_bias=a["dt_bias"],
            dt_softplus=True, impl=impl,
        )  # fmt: skip

    def loss(a: dict) -> jax.Array:
        return jnp.sum(fwd(a).astype(jnp.float32))

    return jax.jit(fwd), jax.jit(jax.grad(loss))


def torch_fns(q: int, inputs: dict) -> tuple[Callable, Callable, Callable] | None:
    """mamba_ssm's `mamba_chunk_scan_combined` on torch CUDA copies of the inputs, if present."""
    try:
        import numpy as np
        import torch
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dt_map = {jnp.bfloat16: torch.bfloat16, jnp.float32: torch.float32}

    def conv(v: jax.Array, grad: bool) -> torch.Tensor:
        arr = torch.from_numpy(np.asarray(v.astype(jnp.float32))).cuda()
        arr = arr.to(dt_map.get(v.dtype.type, torch.float32))
        return arr.requires_grad_(grad)

    t = {k: conv(v, True) for k, v in inputs.items()}

    def fwd():
        with torch.no_grad():
            return mamba_chunk_scan_combined(
                t["x"], t["dt"], t["A"], t["B"], t["C"], q, D=t["D"], dt_bias=t["dt_bias"],
                dt_softplus=True,
            )  # fmt: skip

    def fwd_bwd():
        for v in t.values():
            v.grad = None
        out = mamba_chunk_scan_combined(
            t["x"], t["dt"], t["A"], t["B"], t["C"], q, D=t["D"], dt_bias=t["dt_bias"],
            dt_softplus=True,
        )  # fmt: skip
        out.float().sum().backward()
        return out

    return fwd, fwd_bwd, lambda _: torch.cuda.synchronize()


def bench_row(impl, name, shape, t, dtype, reps, warmup, ceil) -> list[dict]:
    h, p, n, g, q = shape
    inputs = make_inputs(h, p, n, g, t, dtype)
    c = cost(h, p, n, g, q, t, jnp.dtype(dtype).itemsize)
    if impl == "mamba_ssm":
        fns = torch_fns(q, inputs)
        if fns is None:
            return []
        fwd, fwd_bwd, sync = fns
        calls = {"forward": fwd, "forward+backward": fwd_bwd}
    else:
        f, fb = jax_fns(impl, q)
        calls = {"forward": lambda: f(inputs), "forward+backward": lambda: fb(inputs)}
        sync = jax.block_until_ready
    rows = []
    for what, fn in calls.items():
        key = "fwd" if what == "forward" else "fwdbwd"
        row = {"impl": impl, "shape": name, "H": h, "P": p, "N": n, "G": g, "Q": q, "T": t}
        row["pass"] = what
        try:
            tm = timeit(fn, reps, warmup, sync)
        except Exception as err:  # out of memory / unsupported: record it and go on
            rows.append({**row, "error": f"{type(err).__name__}: {str(err)[:200]}"})
            continue
        tflops = c[f"{key}_flops"] / tm["median_s"] / 1e12
        gbps = c[f"{key}_bytes"] / tm["median_s"] / 1e9
        rows.append(
            {
                **row,
                "ms": 1e3 * tm["median_s"],
                "best_ms": 1e3 * tm["best_s"],
                "TFLOPs": tflops,
                "GBps": gbps,
                "pct_matmul": 100 * tflops / ceil["matmul_TFLOPs"],
                "pct_copy": 100 * gbps / ceil["copy_GBps"],
            }
        )
    return rows


def to_markdown(rows: list[dict], meta: dict) -> str:
    ceil = meta["ceilings"]
    lines = [
        f"# SSD benchmark ({meta['device']}, jax {meta['jax']}, {meta['dtype']}, {meta['date']})",
        "",
        f"Ceilings measured: copy {ceil['copy_GBps']:.1f} GB/s, "
        f"bf16 matmul {ceil['matmul_TFLOPs']:.2f} TFLOP/s. FLOPs: ssd.md section 9 model "
        f"(fwd+bwd = {BWD_FACTOR}x fwd); bytes: fused lower bound.",
        "",
        "| shape | T | impl | pass | ms (median) | best ms | TFLOP/s | % matmul | GB/s | % copy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['shape']} (H={r['H']}) | {r['T']} | {r['impl']} | {r['pass']} |"
        if "error" in r:
            lines.append(f"{head} {r['error']} | | | | | |")
            continue
        lines.append(
            f"{head} {r['ms']:.3f} | {r['best_ms']:.3f} | {r['TFLOPs']:.3f} | "
            f"{r['pct_matmul']:.1f} | {r['GBps']:.1f} | {r['pct_copy']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    on_gpu = jax.default_backend() == "gpu"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bench_ssd")
    ap.add_argument("--shapes", default="8b,4b,2.7b")
    ap.add_argument("--seqlens", default="2048,8192,32768" if on_gpu else "1024")
    default_impls = "pallas,reference,mamba_ssm" if on_gpu else "reference,sequential"
    ap.add_argument("--impls", default=default_impls)
    ap.add_argument("--heads", type=int, default=None if on_gpu else 16)
    ap.add_argument("--dtype", default="bfloat16" if on_gpu else "float32")
    ap.add_argument("--reps", type=int, default=20 if on_gpu else 3)
    ap.add_argument("--warmup", type=int, default=3 if on_gpu else 1)
    args = ap.parse_args()
    dtype = jnp.dtype(args.dtype).type
    ceil = ceilings(on_gpu, args.reps)
    rows = []
    for name in args.shapes.split(","):
        h, p, n, g, q = SHAPES[name]
        if args.heads is not None:
            h, g = args.heads, min(g, args.heads)
        for t in (int(v) for v in args.seqlens.split(",")):
            for impl in args.impls.split(","):
                new = bench_row(impl, name, (h, p, n, g, q), t, dtype, args.reps, args.warmup, ceil)
                for row in new:
                    print(json.dumps(row), flush=True)
                rows += new
    meta = {
        "device": str(jax.devices()[0].device_kind),
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "dtype": args.dtype,
        "date": date.today().isoformat(),
        "ceilings": ceil,
        "reps": args.reps,
        "warmup": args.warmup,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = to_markdown(rows, meta)
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
