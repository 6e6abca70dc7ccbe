"""Generation benchmark for BENCHMARKS.md: teacher vs a ~2x smaller pruned-shape student.

    python experiments/bench_generate.py [--out runs/bench_generate] [--prompt-len 2048,8192]
                                         [--gen-len 64] [--batch 1] [--repeats 2]

Teacher: the ``bench-10m`` preset (10.5M params: d 256, 6 Mamba2 layers of 8 x 64 heads,
6 MLP 1024, 2 GQA attention). Student (5.0M, 2.1x smaller): what width + depth pruning
leaves: d 192, 4 Mamba2 layers of 4 x 64 heads, 4 MLP 512, the same 2 attention layers.
Both with random weights (speed and cache size do not depend on the values), fp32.

Per model, prompt length and batch: prefill tokens/s, time to first token, decode tokens/s
(jitted ``lax.scan`` decode loop, compilation excluded, best of ``--repeats``), cache bytes
per sequence (KV vs SSM + conv state) and peak bytes (XLA's estimate of the compiled
prefill / decode functions), with ratios against the teacher. Writes ``bench.json``,
``bench.md`` and ``bench.png`` (when matplotlib is installed) under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig
from jaxprune.inference.bench import run_bench
from jaxprune.inference.report import to_markdown, write_report
from jaxprune.nn.model import init_model
from jaxprune.presets import bench_10m


def student_config() -> ModelConfig:
    """The teacher's shape after pruning hidden, Mamba heads, MLP width and 4 layers."""
    return ModelConfig.from_pattern(
        "M-M*-M-M*-",
        vocab_size=8192,
        hidden=192,
        mamba=Mamba2Config(num_heads=4, head_dim=64, state=64, n_groups=2, chunk_size=128),
        attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=64),
        mlp=MLPConfig(intermediate=512),
        name="student-5m",
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write bench.json / bench.md / bench.png here")
    p.add_argument("--prompt-len", type=_ints, default=[2048, 8192])
    p.add_argument("--gen-len", type=int, default=64)
    p.add_argument("--batch", type=_ints, default=[1])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    models = [
        ("bench-10m", init_model(bench_10m(), 0)),
        ("student-5m", init_model(student_config(), 0)),
    ]
    t0 = time.perf_counter()
    report = run_bench(
        models,
        prompt_lens=args.prompt_len,
        batches=args.batch,
        gen_len=args.gen_len,
        repeats=args.repeats,
        progress=lambda r: print(
            f"  {r['model']} T={r['prompt_len']} b={r['batch']}: "
            f"decode {r['decode_tok_s']:,.0f} tok/s",
            file=sys.stderr,
        ),
    )
    report["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(to_markdown(report), end="")
    print(f"{report['machine']}; total {report['seconds']} s (incl. compilation)")
    if args.out:
        for line in write_report(report, args.out):
            print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
