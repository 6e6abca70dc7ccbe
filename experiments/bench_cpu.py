"""CPU benchmark: the ~10M-parameter Nemotron-H-like model and the SSD scan alone.

    python experiments/bench_cpu.py [--out runs/bench_cpu] [--reps 5] [--skip-sequential]
                                    [--skip-torch]

Times (best and median of ``--reps`` compiled calls, compilation excluded):
  model  forward and forward+backward of ``bench-10m`` at batch 4 x 512, fp32; the same
         model in transformers' NemotronH (PyTorch CPU path) when it is installed;
  ssd    the chunked SSD reference and the sequential scan at a Nemotron-H-8B layer
         shape (b=1, T=2048, H=128, P=64, N=128, G=8, chunk 128), forward and fwd+bwd.
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


def bench_ssd(reps: int, sequential: bool) -> list[dict]:
    b, t, h, p, n, g, q = 1, 2048, 128, 64, 128, 8, 128
    ks = jax.random.split(jax.random.key(1), 5)
    x = jax.random.normal(ks[0], (b, t, h, p))
    dt = jax.random.normal(ks[1], (b, t, h)) - 4.0
    a = -jnp.exp(jax.random.uniform(ks[2], (h,), minval=0.0, maxval=2.7))
    bb = jax.random.normal(ks[3], (b, t, g, n)) / 5
    cc = jax.random.normal(ks[4], (b, t, g, n)) / 5
    dt_bias = jnp.zeros((h,))

    def chunked(x, dt, a, bb, cc):
        y = mamba_chunk_scan(x, dt, a, bb, cc, q, dt_bias=dt_bias, dt_softplus=True)
        return jnp.sum(y * y)

    def seq(x, dt, a, bb, cc):
        y, _ = ssd_sequential(x, process_dt(dt, dt_bias, True), a, bb, cc)
        return jnp.sum(y * y)

    shape = f"b={b}, T={t}, H={h}, P={p}, N={n}, G={g}, Q={q}, fp32"
    impls = [("chunked", chunked)] + ([("sequential scan", seq)] if sequential else [])
    rows = []
    for name, f in impls:
        for mode, fn in (
            ("forward", jax.jit(f)),
            ("forward+backward", jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))),
        ):
            tm = timeit(lambda fn=fn: fn(x, dt, a, bb, cc), reps)
            rows.append({"what": f"SSD {name} {mode}", "shape": shape, **tm})
    return rows


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
    ap.add_argument("--skip-torch", action="store_true", help="skip the transformers baseline")
    args = ap.parse_args()
    rows = bench_model(args.reps)
    if not args.skip_torch:
        rows += bench_torch(args.reps)
    rows += bench_ssd(args.reps, not args.skip_sequential)
    meta = {"machine": machine(), "date": date.today().isoformat(), "reps": args.reps}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = to_markdown(rows, meta)
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
