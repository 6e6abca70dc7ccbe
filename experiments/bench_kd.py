"""CPU benchmark: one knowledge-distillation step, jaxprune vs an equivalent PyTorch step.

    python experiments/bench_kd.py [--batch 4] [--seq-len 256] [--reps 3] [--out DIR]

Student: ``bench-10m`` (~10.5M parameters); teacher: the same block types with twice the
depth and hidden 320 (~20M). One step = frozen teacher forward, student forward + backward,
forward KL at T = 1 on the logits, AdamW update; fp32 everywhere (PyTorch's CPU path has no
bf16 SSD kernel), same batch, sequence length and thread count. jaxprune runs its jitted
train step (``jaxprune.train.step``, loss chunked over the sequence, 1 device); PyTorch runs
transformers' ``NemotronHForCausalLM`` (the reference torch path on CPU) with a hand-written
KL and ``torch.optim.AdamW``. Prints the table (tokens/s from the best of ``--reps`` timed
steps after a warm-up/compile step) and the jaxprune/PyTorch ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxprune.config import ModelConfig
from jaxprune.counts import count_params
from jaxprune.nn.model import init_model
from jaxprune.presets import bench_10m
from jaxprune.sharding import make_mesh
from jaxprune.train import LossConfig, OptimConfig, TrainConfig
from jaxprune.train.optim import make_optimizer, make_schedule
from jaxprune.train.state import init_state, place, retype
from jaxprune.train.step import SplitModel, batch_shardings, make_train_step


def teacher_config() -> ModelConfig:
    c = bench_10m()
    return c.replace(layers=c.layers * 2, hidden=320, name="bench-20m-teacher")


def _times(step, reps: int) -> dict:
    step()  # compile / warm up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return {"best_s": min(ts), "median_s": statistics.median(ts)}


def bench_jax(batch: int, seq: int, reps: int, chunk: int = 128) -> dict:
    cfg = TrainConfig(
        steps=100,
        batch_size=batch,
        seq_len=seq,
        compute_dtype="float32",
        teacher_dtype="float32",
        loss=LossConfig(kl="forward", temperature=1.0, chunk=chunk),
        optim=OptimConfig(lr=1e-4, warmup_steps=0, clip_norm=0.0, weight_decay=0.01),
        mesh=(1, 1, 1),
    )
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    s = SplitModel.of(retype(init_model(bench_10m(), 0), "float32", "float32", mesh))
    t_def, t_state = nnx.split(retype(init_model(teacher_config(), 1), "float32", "float32", mesh))
    tx = make_optimizer(cfg.optim, cfg.steps)
    state, sh = init_state(s, tx, mesh, seed=0)
    fn = make_train_step(
        s, (t_def, t_state), tx, make_schedule(cfg.optim, cfg.steps), cfg, mesh, sh
    )
    rng = np.random.default_rng(0)
    tok = rng.integers(0, bench_10m().vocab_size, (1, batch, seq + 1)).astype(np.int32)
    host = {
        "tokens": tok[..., :-1],
        "targets": tok[..., 1:],
        "loss_mask": np.ones((1, batch, seq), np.float32),
        "seq_idx": np.zeros((1, batch, seq), np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (1, batch, seq)).copy(),
    }
    b = place(host, batch_shardings(mesh))
    box = {"state": state}

    def step():
        box["state"], m = fn(box["state"], s.rest, t_state, b)
        jax.block_until_ready(m)

    return _times(step, reps)


def _hf(c: ModelConfig):
    from jaxprune.testing.hf_models import nemotron_h_config

    return nemotron_h_config(c)


def bench_torch(batch: int, seq: int, reps: int) -> dict | None:
    try:
        import torch
        from transformers import NemotronHForCausalLM
    except ImportError:
        return None
    torch.manual_seed(0)
    student = NemotronHForCausalLM(_hf(bench_10m()))
    teacher = NemotronHForCausalLM(_hf(teacher_config())).eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01)
    tokens = torch.randint(0, bench_10m().vocab_size, (batch, seq))

    def step():
        with torch.no_grad():
            t_logp = torch.log_softmax(teacher(tokens).logits.float(), -1)
        s_logp = torch.log_softmax(student(tokens).logits.float(), -1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        kl.backward()
        opt.step()

    return {**_times(step, reps), "version": torch.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--chunk", type=int, default=128, help="KD loss sequence chunk (0 = none)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--out", default=None, help="write results.json here")
    args = p.parse_args()
    tokens = args.batch * args.seq_len
    rows = {
        f"jaxprune (jax {jax.__version__})": bench_jax(
            args.batch, args.seq_len, args.reps, args.chunk
        )
    }
    if not args.skip_torch:
        import torch

        torch.set_num_threads(args.threads)
        res = bench_torch(args.batch, args.seq_len, args.reps)
        if res is not None:
            rows[f"transformers NemotronH (torch {res.pop('version')})"] = res
    meta = {
        "student_params": count_params(bench_10m())["total"],
        "teacher_params": count_params(teacher_config())["total"],
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor()} ({os.cpu_count()} cpus)",
    }
    print(
        f"KD step: student {meta['student_params']:,} / teacher {meta['teacher_params']:,} "
        f"params, b={args.batch} T={args.seq_len}, fp32, {args.threads} threads"
    )
    print(f"{'implementation':<40} {'best s':>8} {'median s':>9} {'tokens/s':>10}")
    for name, r in rows.items():
        r["tokens_per_s"] = tokens / r["best_s"]
        print(f"{name:<40} {r['best_s']:>8.3f} {r['median_s']:>9.3f} {r['tokens_per_s']:>10,.0f}")
    vals = list(rows.values())
    if len(vals) == 2:
        meta["ratio_jax_over_torch"] = vals[0]["tokens_per_s"] / vals[1]["tokens_per_s"]
        print(f"ratio jaxprune / PyTorch: {meta['ratio_jax_over_torch']:.2f}x")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps({"rows": rows, **meta}, indent=2))


if __name__ == "__main__":
    main()
