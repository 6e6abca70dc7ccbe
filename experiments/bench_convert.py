"""Benchmark: HF -> native `convert` and native -> HF `export` of a ~1B-parameter checkpoint.

    python experiments/bench_convert.py [--repeats 5] [--dtype bf16|fp32] [--shard-size 2GB]
                                        [--workdir DIR] [--keep] [--out runs/bench_convert]

Writes a synthetic Nemotron-H-style HF checkpoint (random weights, tensor by tensor) into
``--workdir`` (default: a fresh temp dir, removed at the end unless ``--keep``), then runs
``convert`` and ``export`` each in a fresh ``python`` subprocess and reports, per step, wall
seconds, peak RSS (VmHWM of the child, plus sampled peaks of its anonymous and file-backed
parts), the input size on disk and peak RSS / the HF checkpoint size. A child that imports
only jax + jaxprune gives the fixed cost. The export (in the source dtype) is checked against the
source: same names and shapes, bit-identical bytes for a sample of tensors. Disk needed:
about three times the checkpoint (~2.3 GB at bf16 for the default 1.14B model).
Writes ``results.json`` and ``results.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxprune.config import INF, AttentionConfig, Mamba2Config, MLPConfig, ModelConfig
from jaxprune.converters.families import nemotron_h
from jaxprune.converters.hf_config import write_hf_config
from jaxprune.converters.io import open_checkpoint, parse_size, write_safetensors
from jaxprune.counts import count_params

DTYPES = {"bf16": np.dtype(ml_dtypes.bfloat16), "fp32": np.dtype(np.float32)}
MIB = 2**20

# Run in a fresh interpreter: argv = [step, json args]. Prints one "BENCH_RESULT {json}" line.
CHILD = r"""
import json, sys, threading, time
t_start = time.perf_counter()
def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0])
    return out
peak = {"RssAnon": 0, "RssFile": 0}
done = threading.Event()
def sample():
    while not done.is_set():
        for key, val in status().items():
            if key in peak:
                peak[key] = max(peak[key], val)
        done.wait(0.01)
threading.Thread(target=sample, daemon=True).start()
step, a = sys.argv[1], json.loads(sys.argv[2])
import jax
import jaxprune
from jaxprune.converters import api
if step == "baseline+backend":
    jax.devices()
t0 = time.perf_counter()
if step == "convert":
    api.convert(a["src"], a["out"], dtype=a["dtype"])
elif step == "export":
    api.export(a["src"], a["out"], dtype=a["dtype"], shard_size=a["shard_size"])
t1 = time.perf_counter()
done.set()
s = status()
print("BENCH_RESULT " + json.dumps({"step_s": t1 - t0, "import_s": t0 - t_start,
    "hwm_kib": s["VmHWM"], "anon_peak_kib": max(peak["RssAnon"], s["RssAnon"]),
    "file_peak_kib": max(peak["RssFile"], s["RssFile"])}))
"""


def bench_config(repeats: int) -> ModelConfig:
    """~1.14B parameters at ``repeats=5``: vocab 32000, d 2048, ``M-M-M*-`` x repeats."""
    return ModelConfig.from_pattern(
        "M-M-M*-" * repeats,
        vocab_size=32000,
        hidden=2048,
        mamba=Mamba2Config(
            num_heads=64,
            head_dim=64,
            state=128,
            n_groups=8,
            chunk_size=128,
            dt_limit=(1e-3, INF),
            decode_dt_limit=(0.0, INF),
        ),
        attention=AttentionConfig(num_heads=16, num_kv_heads=8, head_dim=128),
        mlp=MLPConfig(intermediate=8192, activation="relu2"),
        name=f"bench-convert-{repeats}x",
    )


def write_source(cfg: ModelConfig, out: Path, dtype: np.dtype, shard_size: int) -> int:
    """The synthetic HF checkpoint, one random tensor at a time; returns the element count."""
    rules = nemotron_h.rules(cfg)
    specs = [(r.hf, r.hf_shape, dtype) for r in rules]
    rng = np.random.default_rng(0)

    def tensors():
        for name, shape, _ in specs:
            yield name, (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)

    write_safetensors(out, specs, tensors(), max_shard_bytes=shard_size)
    write_hf_config(nemotron_h.config_to_hf(cfg, None, "nemotron_h"), out / "config.json")
    return sum(math.prod(r.hf_shape) for r in rules)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_child(step: str, label: str | None = None, **args) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, step, json.dumps(args)], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{step} child failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads(lines[-1].split(" ", 1)[1])
    return {"step": label or step, "process_s": wall, **res}


def verify(src: Path, exported: Path) -> dict:
    """Names and shapes of every tensor; bit-identical bytes for a sample of five."""
    with open_checkpoint(src) as a, open_checkpoint(exported) as b:
        names = a.keys()
        if names != b.keys():
            sys.exit(f"export has different tensor names: {sorted(set(names) ^ set(b.keys()))[:5]}")
        bad = [n for n in names if (a.shape(n), a.dtype(n)) != (b.shape(n), b.dtype(n))]
        if bad:
            sys.exit(f"export differs in shape/dtype for {bad[:5]}")
        sample = ["backbone.embeddings.weight", "lm_head.weight"]
        for suffix in ("in_proj.weight", "conv1d.weight", "o_proj.weight", "down_proj.weight"):
            sample.append(next(n for n in names if n.endswith(suffix)))
        for n in sample:
            if a.get(n).tobytes() != b.get(n).tobytes():
                sys.exit(f"export is not bit-identical for {n}")
    return {"tensors": len(names), "bit_identical_sample": sample}


def machine() -> dict:
    import jax

    mem = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemT"))
    return {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem.split()[1]) / 2**20, 1),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def to_markdown(rows: list[dict], meta: dict) -> str:
    m = meta["machine"]
    lines = [
        f"Model: {meta['params']:,} parameters ({meta['pattern_repeats']} x `M-M-M*-`), "
        f"{meta['dtype']}, shards of {meta['shard_size'] / 1e9:g} GB. Machine: {m['arch']}, "
        f"{m['cores']} cores, {m['ram_gib']} GiB, Python {m['python']}, jax {m['jax']}; "
        f"{meta['date']}.",
        "",
        "| step | step (s) | process (s) | peak RSS (MiB) | peak anon / file (MiB) "
        "| input on disk (MiB) | peak / ckpt | (peak - baseline) / ckpt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base, ckpt = rows[0]["hwm_kib"] / 1024, meta["sizes"]["source_mib"]
    for r in rows:
        rss, size = r["hwm_kib"] / 1024, r.get("input_mib")
        ratio = f"{rss / ckpt:.2f}" if size else ""
        net = f"{(rss - base) / ckpt:.2f}" if size else ""
        lines.append(
            f"| {r['step']} | {r['step_s']:.1f} | {r['process_s']:.1f} | {rss:,.0f} | "
            f"{r['anon_peak_kib'] / 1024:,.0f} / {r['file_peak_kib'] / 1024:,.0f} | "
            f"{f'{size:,.0f}' if size else ''} | {ratio} | {net} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="repeats of M-M-M*- (5: ~1.14B)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--shard-size", default="2GB")
    ap.add_argument("--workdir", help="where the checkpoints go (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    ap.add_argument("--out", default="runs/bench_convert")
    args = ap.parse_args()
    cfg, dtype, shard = bench_config(args.repeats), DTYPES[args.dtype], parse_size(args.shard_size)
    n_params = count_params(cfg)["total"]
    largest_mib = max(math.prod(r.hf_shape) for r in nemotron_h.rules(cfg)) * dtype.itemsize / MIB
    print(f"model: {n_params:,} parameters, pattern {cfg.pattern}")
    base = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    need = 3 * n_params * dtype.itemsize * 1.05 + 2**30
    free = shutil.disk_usage(base).free
    if free < need:
        sys.exit(
            f"{base}: {free / 1e9:.1f} GB free, need ~{need / 1e9:.1f} GB (source, native, "
            "export); pass --workdir on a larger disk or lower --repeats"
        )
    work = Path(tempfile.mkdtemp(prefix="bench_convert-", dir=base))
    src, native, exported = work / "hf", work / "native", work / "export"
    try:
        t0 = time.perf_counter()
        n_written = write_source(cfg, src, dtype, shard)
        write_s = time.perf_counter() - t0
        assert n_written == n_params, (n_written, n_params)
        src_mib, rows = dir_bytes(src) / MIB, []
        print(f"source: {src_mib:,.0f} MiB written in {write_s:.1f} s at {src}")
        rows.append(run_child("baseline", "baseline: import jax + jaxprune"))
        rows.append(run_child("baseline+backend", "baseline + jax.devices()"))
        rows.append(run_child("convert", src=str(src), out=str(native), dtype=None))
        rows[-1]["input_mib"] = src_mib
        native_mib = dir_bytes(native) / MIB
        rows.append(
            run_child(
                "export", src=str(native), out=str(exported), dtype=args.dtype, shard_size=shard
            )
        )
        rows[-1]["input_mib"] = native_mib
        check = verify(src, exported)
        sizes = {
            "source_mib": src_mib,
            "native_mib": native_mib,
            "export_mib": dir_bytes(exported) / MIB,
        }
    finally:
        if args.keep:
            print(f"kept checkpoints in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "params": n_params,
        "pattern_repeats": args.repeats,
        "dtype": args.dtype,
        "shard_size": shard,
        "write_source_s": write_s,
        "largest_tensor_mib": largest_mib,
        "sizes": sizes,
        "verify": check,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = to_markdown(rows, meta)
    md += (
        f"\nckpt = the HF checkpoint ({sizes['source_mib']:,.0f} MiB); native (orbax, zstd) "
        f"{sizes['native_mib']:,.0f} MiB, export {sizes['export_mib']:,.0f} MiB; largest tensor "
        f"{meta['largest_tensor_mib']:,.0f} MiB. Peak RSS is the child's VmHWM; anon / file are "
        "sampled peaks (10 ms) of RssAnon / RssFile (file: shared libraries and memory-mapped "
        f"safetensors). The source is read warm from the page cache (just written, in "
        f"{write_s:.1f} s). Verified: {check['tensors']} tensor names/shapes/dtypes equal; "
        f"bit-identical: {', '.join(check['bit_identical_sample'])}.\n"
    )
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
