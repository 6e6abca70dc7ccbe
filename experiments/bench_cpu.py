"""CPU benchmark: the ~10M-parameter Nemotron-H-like model and the SSD scan alone.

    python experiments/bench_cpu.py [--out runs/bench_cpu] [--reps 5] [--skip-sequential]
                                    [--skip-torch] [--skip-model]

Times (best and median of ``--reps`` compiled calls, compilation excluded):
  model  forward and forward+backward of ``bench-10m`` at batch 4 x 512, fp32; the same
         model in transformers' NemotronH (PyTorch CPU path) when it is installed;
  ssd    the chunked SSD (impl="xla" and the reference), the sequential scan and
         transformers' torch chunked scan (NemotronH's `mamba2_chunk_scan`) at a
         Nemotron-H-8B layer shape (b=1, T=2048, H=128, P=64, N=128, G=8, chunk 128),
         forward and fwd+bwd, interleaved, with torch/JAX ratio rows.
Writes ``results.json`` and ``results.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.kernels.ssd import mamba_chunk_scan, process_dt, ssd_sequential
from jaxprune.nn.model import init_model
from jaxprune.presets import bench_10m


def timeit(fn, reps: int, sync=jax.block_until_ready) -> dict:
    sync(fn())  # compile + warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return {"best_s": min(times), "median_s": statistics.median(times)}


def bench_model(reps: int) -> list[dict]:
    cfg = bench_10m()
    model = init_model(cfg, 0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens = jax.random.randint(jax.random.key(0), (4, 513), 0, cfg.vocab_size)

    def loss(p, tokens):
        logits = nnx.merge(graphdef, p, rest)(tokens[:, :-1])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    fwd = jax.jit(loss)
    fwd_bwd = jax.jit(jax.value_and_grad(loss))
    rows = []
    for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        t = timeit(lambda fn=fn: fn(params, tokens), reps)
        rows.append(
            {
                "what": f"bench-10m {name}",
                "shape": "b=4, T=512, fp32",
                **t,
                "tokens_per_s": 4 * 512 / t["best_s"],
            }
        )
    return rows


def bench_torch(reps: int) -> list[dict]:
    """The same model in transformers' NemotronH (PyTorch reference path), when installed."""
    try:
        import torch
        from transformers import NemotronHForCausalLM

        from jaxprune.testing.hf_models import nemotron_h_config
    except ImportError:
        return []
    torch.set_num_threads(os.cpu_count() or 1)
    c = bench_10m()
    hf = nemotron_h_config(c)
    model = NemotronHForCausalLM(hf)
    tokens = torch.randint(0, c.vocab_size, (4, 513))

    def loss():
        return model(tokens[:, :-1], labels=tokens[:, :-1]).loss

    def fwd():
        with torch.inference_mode():
            return loss()

    def fwd_bwd():
        model.zero_grad()
        out = loss()
        out.backward()
        return out

    rows = []
    for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        t = timeit(fn, reps, sync=lambda r: r)
        rows.append(
            {
                "what": f"bench-10m {name}, transformers NemotronH (torch {torch.__version__})",
                "shape": "b=4, T=512, fp32",
                **t,
                "tokens_per_s": 4 * 512 / t["best_s"],
            }
        )
    return rows


def _ssd_inputs(b: int, t: int, h: int, g: int, p: int, n: int) -> tuple:
    ks = jax.random.split(jax.random.key(1), 5)
    x = jax.random.normal(ks[0], (b, t, h, p))
    dt = jax.random.normal(ks[1], (b, t, h)) - 4.0
    a = -jnp.exp(jax.random.uniform(ks[2], (h,), minval=0.0, maxval=2.7))
    bb = jax.random.normal(ks[3], (b, t, g, n)) / 5
    cc = jax.random.normal(ks[4], (b, t, g, n)) / 5
    return x, dt, a, bb, cc


def _torch_ssd(args: tuple, q: int) -> dict | None:
    """transformers' torch chunked scan (NemotronH's `mamba2_chunk_scan`, the path it runs
    without mamba_ssm): forward and fwd+bwd (grads of x, dt, A, B, C) callables."""
    try:
        import numpy as np
        import torch
        from transformers.models.nemotron_h import modeling_nemotron_h as nh
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    leaves = [torch.tensor(np.asarray(v)) for v in args]
    bias = torch.zeros(leaves[0].shape[2])

    def fwd():
        with torch.inference_mode():
            return nh.mamba2_chunk_scan(*leaves, q, dt_bias=bias, dt_softplus=True)

    grads = [t.clone().requires_grad_(True) for t in leaves]

    def fwd_bwd():
        y = nh.mamba2_chunk_scan(*grads, q, dt_bias=bias, dt_softplus=True)
        return torch.autograd.grad((y * y).sum(), grads)

    return {"forward": fwd, "forward+backward": fwd_bwd, "version": torch.__version__}


def bench_ssd(reps: int, sequential: bool, torch_ssd: bool) -> list[dict]:
    """The SSD scan alone: impl="xla" and "reference" (and the sequential scan, and
    transformers' torch path), each timed A B A B ... over ``reps`` rounds; ratio rows give
    torch's best time over each JAX path's best."""
    b, t, h, p, n, g, q = 1, 2048, 128, 64, 128, 8, 128
    args = _ssd_inputs(b, t, h, g, p, n)
    dt_bias = jnp.zeros((h,))

    def chunked(impl):
        def f(x, dt, a, bb, cc, dt_bias):
            y = mamba_chunk_scan(x, dt, a, bb, cc, q, dt_bias=dt_bias, dt_softplus=True, impl=impl)
            return jnp.sum(y * y)

        return f

    def seq(x, dt, a, bb, cc, dt_bias):
        y, _ = ssd_sequential(x, process_dt(dt, dt_bias, True), a, bb, cc)
        return jnp.sum(y * y)

    shape = f"b={b}, T={t}, H={h}, P={p}, N={n}, G={g}, Q={q}, fp32"
    impls = [("chunked (impl=xla)", chunked("xla")), ("chunked (reference)", chunked("reference"))]
    impls += [("sequential scan", seq)] if sequential else []
    calls = {}
    for name, f in impls:
        for mode, fn in (("forward", f), ("forward+backward", jax.grad(f, argnums=range(5)))):
            comp = jax.jit(fn).lower(*args, dt_bias).compile()
            calls[f"SSD {name} {mode}"] = lambda c=comp: jax.block_until_ready(c(*args, dt_bias))
    tsd = _torch_ssd(args, q) if torch_ssd else None
    if tsd is not None:
        for mode in ("forward", "forward+backward"):
            calls[f"SSD transformers torch {tsd['version']} {mode}"] = tsd[mode]
    times = interleaved(calls, reps)
    rows = [{"what": k, "shape": shape, **v} for k, v in times.items()]
    if tsd is not None:
        for mode in ("forward", "forward+backward"):
            torch_best = times[f"SSD transformers torch {tsd['version']} {mode}"]["best_s"]
            for name, _ in impls[:2]:
                ratio = torch_best / times[f"SSD {name} {mode}"]["best_s"]
                rows.append(
                    {"what": f"torch / {name} {mode} (x faster)", "shape": shape, "ratio": ratio}
                )
    return rows


def interleaved(calls: dict, reps: int) -> dict:
    """Best and median time of each call, run A B C A B C ... (one warm-up call each first)."""
    for fn in calls.values():
        fn()
    times = {k: [] for k in calls}
    for _ in range(reps):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"best_s": min(v), "median_s": statistics.median(v)} for k, v in times.items()}


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"jax {jax.__version__}, {jax.devices()[0].platform}"
    )


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Machine: {meta['machine']}; date {meta['date']}.",
        "",
        "| what | shape | best (s) | median (s) | tokens/s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "ratio" in r:
            lines.append(f"| {r['what']} | {r['shape']} | {r['ratio']:.2f}x | | |")
            continue
        tps = f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else ""
        lines.append(
            f"| {r['what']} | {r['shape']} | {r['best_s']:.3f} | {r['median_s']:.3f} | {tps} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--skip-torch", action="store_true", help="skip the transformers baselines")
    ap.add_argument("--skip-model", action="store_true", help="time the SSD scan only")
    args = ap.parse_args()
    rows = [] if args.skip_model else bench_model(args.reps)
    if not args.skip_torch and not args.skip_model:
        rows += bench_torch(args.reps)
    rows += bench_ssd(args.reps, not args.skip_sequential, not args.skip_torch)
    meta = {"machine": machine(), "date": date.today().isoformat(), "reps": args.reps}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = to_markdown(rows, meta)
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
