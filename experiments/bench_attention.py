"""Attention benchmark: the reference (full score matrix) against the blockwise kernel.

    python experiments/bench_attention.py [--out runs/bench_attention] [--ops 512,1024,2048,4096]
                                          [--prefill 2048,8192] [--blocks 256,512]
                                          [--decode-fill 256,8192] [--repeats 3]

``ops``: one attention call at bench-10m's attention shape (8 query / 2 KV heads of 64,
batch 1, fp32), forward and forward+backward, reference vs blockwise (with block skipping
and, to show what skipping saves, without), timed interleaved (A B A B, best of
``repeats``). ``decode``: one-query attention over an 8k cache filled to ``--decode-fill``
(the blockwise kernel's cost grows with the fill, the reference's does not). ``prefill``:
bench-10m prefill (``model.step`` into an empty cache of the prompt length + 64) tokens/s
and XLA's compiled memory estimate (arguments + outputs + temporaries) per attention
implementation. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.config import AttentionConfig
from jaxprune.nn.model import init_model
from jaxprune.ops.attention import dot_product_attention
from jaxprune.ops.blockwise_attention import blockwise_attention
from jaxprune.presets import bench_10m


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _peak(compiled) -> int:
    ma = compiled.memory_analysis()
    return int(
        ma.argument_size_in_bytes
        + ma.output_size_in_bytes
        + ma.temp_size_in_bytes
        - ma.alias_size_in_bytes
    )


def _best_interleaved(fns: dict, args: tuple, repeats: int) -> dict[str, float]:
    """Best wall time of each compiled fn, run A B A B ... ``repeats`` times."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def op_rows(lengths: list[int], blocks: list[int], repeats: int) -> list[dict]:
    """One attention call per length: reference vs blockwise per block size."""
    rows = []
    for t in lengths:
        key = jax.random.split(jax.random.key(t), 3)
        q = jax.random.normal(key[0], (1, t, 8, 64), jnp.float32)
        k = jax.random.normal(key[1], (1, t, 2, 64), jnp.float32)
        v = jax.random.normal(key[2], (1, t, 2, 64), jnp.float32)
        pos = jnp.arange(t, dtype=jnp.int32)[None]
        variants = {"reference": partial(_ref, pos=pos)}
        for bsz in blocks:
            for skip in (True, False):
                name = f"blockwise{bsz}" + ("" if skip else "-noskip")
                variants[name] = _blockwise(pos, bsz, skip)
        for mode in ("fwd", "fwd+bwd"):
            fns = {}
            for name, f in variants.items():
                g = f if mode == "fwd" else jax.grad(_loss(f), argnums=(0, 1, 2))
                fns[name] = jax.jit(g)
            best = _best_interleaved(fns, (q, k, v), repeats)
            for name, sec in best.items():
                rows.append({"T": t, "mode": mode, "impl": name, "seconds": round(sec, 5)})
                print(f"  T={t} {mode} {name}: {sec * 1e3:.1f} ms", file=sys.stderr)
    return rows


def decode_rows(cache_len: int, fills: list[int], repeats: int) -> list[dict]:
    """One decode-step attention call (1 query) over a ``cache_len`` cache filled up to each
    of ``fills``: the reference reads the whole cache, the blockwise kernel the filled part."""
    key = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(key[0], (1, 1, 8, 64), jnp.float32)
    k = jax.random.normal(key[1], (1, cache_len, 2, 64), jnp.float32)
    v = jax.random.normal(key[2], (1, cache_len, 2, 64), jnp.float32)
    k_pos = jnp.arange(cache_len, dtype=jnp.int32)[None]
    fns = {
        impl: jax.jit(
            lambda q, k, v, p, impl=impl: dot_product_attention(
                q, k, v, q_pos=p, k_pos=k_pos, impl=impl
            )
        )
        for impl in ("reference", "blockwise")
    }
    rows = []
    for fill in fills:
        p = jnp.full((1, 1), fill - 1, jnp.int32)
        best = _best_interleaved(fns, (q, k, v, p), repeats)
        for impl, sec in best.items():
            rows.append({"cache": cache_len, "fill": fill, "impl": impl, "seconds": sec})
            print(
                f"  decode cache={cache_len} fill={fill} {impl}: {sec * 1e6:.0f} us",
                file=sys.stderr,
            )
    return rows


def _ref(q, k, v, *, pos):
    return dot_product_attention(q, k, v, q_pos=pos, k_pos=pos, impl="reference")


def _blockwise(pos, bsz: int, skip: bool):
    def f(q, k, v):
        kw = dict(block_q=bsz, block_k=bsz, skip=skip)
        return blockwise_attention(q, k, v, q_pos=pos, k_pos=pos, **kw)

    return f


def _loss(f):
    return lambda q, k, v: jnp.sum(f(q, k, v) ** 2)


def _with_impl(cfg, impl: str):
    layers = tuple(
        dataclasses.replace(x, attn_impl=impl) if isinstance(x, AttentionConfig) else x
        for x in cfg.layers
    )
    return cfg.replace(layers=layers)


def prefill_rows(lengths: list[int], repeats: int) -> list[dict]:
    """bench-10m prefill tokens/s and compiled memory per attention implementation."""
    rows = []
    for t in lengths:
        prompt = jax.random.randint(jax.random.key(0), (1, t), 0, 8192, jnp.int32)
        fns, peaks, states = {}, {}, {}
        for impl in ("reference", "blockwise"):
            graphdef, state = nnx.split(init_model(_with_impl(bench_10m(), impl), 0))

            def run(state, prompt, graphdef=graphdef):
                m = nnx.merge(graphdef, state)
                logits, cache = m.step(prompt, m.init_cache(1, prompt.shape[1] + 64))
                return logits[:, -1], cache.pos

            compiled = jax.jit(run).lower(state, prompt).compile()
            fns[impl], peaks[impl], states[impl] = compiled, _peak(compiled), state
        best = {}
        for _ in range(repeats + 1):  # the first round warms up
            for impl, fn in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn(states[impl], prompt))
                sec = time.perf_counter() - t0
                best[impl] = min(best.get(impl, float("inf")), sec)
        for impl in fns:
            row = {
                "T": t,
                "impl": impl,
                "prefill_tok_s": round(t / best[impl], 1),
                "peak_bytes": peaks[impl],
            }
            rows.append(row)
            print(f"  prefill T={t} {impl}: {row}", file=sys.stderr)
    return rows


def to_markdown(report: dict) -> str:
    lines = ["| T | mode | impl | ms |", "|---|---|---|---|"]
    for r in report["ops"]:
        lines.append(f"| {r['T']} | {r['mode']} | {r['impl']} | {r['seconds'] * 1e3:.1f} |")
    lines += ["", "| decode: cache | filled | impl | us |", "|---|---|---|---|"]
    for r in report["decode"]:
        lines.append(f"| {r['cache']} | {r['fill']} | {r['impl']} | {r['seconds'] * 1e6:.0f} |")
    lines += ["", "| prefill T | impl | tok/s | peak MiB |", "|---|---|---|---|"]
    for r in report["prefill"]:
        mib = r["peak_bytes"] / 2**20
        lines.append(f"| {r['T']} | {r['impl']} | {r['prefill_tok_s']:,.0f} | {mib:,.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write results.json / results.md here")
    p.add_argument("--ops", type=_ints, default=[512, 1024, 2048, 4096])
    p.add_argument("--prefill", type=_ints, default=[2048, 8192])
    p.add_argument("--decode-fill", type=_ints, default=[256, 2048, 8192])
    p.add_argument("--blocks", type=_ints, default=[256, 512])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    report = {
        "backend": jax.default_backend(),
        "ops": op_rows(args.ops, args.blocks, args.repeats),
        "decode": decode_rows(8192, args.decode_fill, 10 * args.repeats),
        "prefill": prefill_rows(args.prefill, args.repeats),
    }
    md = to_markdown(report)
    print(md, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(report, indent=1))
        (out / "results.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
