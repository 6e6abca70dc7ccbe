"""CPU benchmark: one knowledge-distillation step, jaxprune vs an equivalent PyTorch step.

    python experiments/bench_kd.py [--case hybrid,llama135m] [--reps 3] [--out DIR]

Cases (``--case``, comma-separated):
  hybrid     student ``bench-10m`` (~10.5M parameters), teacher the same block types with
             twice the depth and hidden 320 (~20M), b=4 x T=256; PyTorch side: transformers'
             ``NemotronHForCausalLM`` (the reference torch path on CPU).
  llama135m  a 135M Llama-shape teacher (hidden 576, 30 x (GQA attention 9 q / 3 kv heads of
             64 + SwiGLU 1536), vocabulary 49152, tied embeddings) and its pruned student
             (hidden 432, FFN 768, other dims the same), b=4 x T=256; PyTorch side:
             transformers' ``LlamaForCausalLM`` of the same shapes. Random weights.
One step = frozen teacher forward, student forward + backward, forward KL at T = 1 on the
logits, AdamW update; fp32 everywhere, same batch, sequence length and thread count.
jaxprune runs its jitted train step (``jaxprune.train.step``, 1 device). Timings are the
best of ``--reps`` steps after a warm-up/compile step, jaxprune and PyTorch steps
interleaved (A B A B ...) so that load on a shared machine hits both alike. Also reports
each step's FLOPs (XLA cost analysis of the jaxprune step) as a fraction of the measured
fp32 matmul peak. Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.config import AttentionConfig, MLPConfig, ModelConfig, RopeConfig
from jaxprune.counts import count_params
from jaxprune.nn.model import init_model
from jaxprune.presets import bench_10m
from jaxprune.sharding import make_mesh
from jaxprune.train import LossConfig, OptimConfig, TrainConfig
from jaxprune.train.optim import make_optimizer, make_schedule
from jaxprune.train.state import init_state, place, retype
from jaxprune.train.step import SplitModel, batch_shardings, make_train_step


@dataclass(frozen=True)
class Case:
    """One benchmark shape: student and teacher configs and the torch family."""

    name: str
    student: ModelConfig
    teacher: ModelConfig
    family: str  # "nemotron_h" or "llama"
    batch: int = 4
    seq_len: int = 256


def teacher_config() -> ModelConfig:
    c = bench_10m()
    return c.replace(layers=c.layers * 2, hidden=320, name="bench-20m-teacher")


def llama135m(hidden: int = 576, ffn: int = 1536, name: str = "llama-135m") -> ModelConfig:
    """The 135M Llama shape (SmolLM-135M-like): 30 x (attention + SwiGLU), tied embeddings."""
    return ModelConfig.from_pattern(
        "*-" * 30,
        vocab_size=49152,
        hidden=hidden,
        attention=AttentionConfig(
            num_heads=9, num_kv_heads=3, head_dim=64, rope=RopeConfig(theta=100000.0)
        ),
        mlp=MLPConfig(intermediate=ffn, activation="swiglu"),
        tie_embeddings=True,
        name=name,
    )


def cases() -> dict[str, Case]:
    return {
        "hybrid": Case("hybrid", bench_10m(), teacher_config(), "nemotron_h"),
        "llama135m": Case(
            "llama135m", llama135m(432, 768, "llama-135m-pruned"), llama135m(), "llama"
        ),
    }


def host_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One (1, batch, seq) packed batch of random tokens (grad_accum = 1)."""
    tok = np.random.default_rng(seed).integers(0, vocab, (1, batch, seq + 1)).astype(np.int32)
    return {
        "tokens": tok[..., :-1],
        "targets": tok[..., 1:],
        "loss_mask": np.ones((1, batch, seq), np.float32),
        "seq_idx": np.zeros((1, batch, seq), np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (1, batch, seq)).copy(),
    }


def build_jax(case: Case, chunk: int = 128, fused: bool = True) -> dict:
    """The jitted train step of ``case`` and its inputs: {"fn", "state", "rest", "teacher",
    "batch", "student", "teacher_def", "tx", "cfg"}."""
    cfg = TrainConfig(
        steps=100,
        batch_size=case.batch,
        seq_len=case.seq_len,
        compute_dtype="float32",
        teacher_dtype="float32",
        loss=LossConfig(kl="forward", temperature=1.0, chunk=chunk),
        optim=OptimConfig(lr=1e-4, warmup_steps=0, clip_norm=0.0, weight_decay=0.01),
        mesh=(1, 1, 1),
    )
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    s = SplitModel.of(retype(init_model(case.student, 0), "float32", "float32", mesh))
    t_def, t_state = nnx.split(retype(init_model(case.teacher, 1), "float32", "float32", mesh))
    tx = make_optimizer(cfg.optim, cfg.steps)
    state, sh = init_state(s, tx, mesh, seed=0)
    schedule = make_schedule(cfg.optim, cfg.steps)
    fn = make_train_step(s, (t_def, t_state), tx, schedule, cfg, mesh, sh, fused_loss=fused)
    batch = place(
        host_batch(case.student.vocab_size, case.batch, case.seq_len), batch_shardings(mesh)
    )
    return {
        "fn": fn, "state": state, "rest": s.rest, "teacher": t_state, "batch": batch,
        "student": s, "teacher_def": t_def, "tx": tx, "cfg": cfg, "fused": fused,
    }  # fmt: skip


def jax_step(case: Case, chunk: int = 128, fused: bool = True):
    """A no-argument callable running one jaxprune KD step (state threaded through), and
    the step's FLOPs from XLA's cost analysis."""
    b = build_jax(case, chunk, fused)
    flops = step_flops(b)
    box = {"state": b["state"]}

    def step():
        box["state"], m = b["fn"](box["state"], b["rest"], b["teacher"], b["batch"])
        jax.block_until_ready(m)

    return step, flops


def step_flops(b: dict) -> float:
    """FLOPs of one compiled train step (XLA's cost analysis; loops counted once per trip
    where XLA knows the trip count)."""
    compiled = b["fn"].lower(b["state"], b["rest"], b["teacher"], b["batch"]).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", 0.0))


def hf_config(c: ModelConfig, family: str):
    """transformers config of the same shapes (fp32, eager attention)."""
    if family == "nemotron_h":
        from jaxprune.testing.hf_models import nemotron_h_config

        return nemotron_h_config(c)
    from transformers import LlamaConfig

    a, m = c.layers[0], c.layers[1]
    return LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden,
        intermediate_size=m.intermediate,
        num_hidden_layers=len(c.layers) // 2,
        num_attention_heads=a.num_heads,
        num_key_value_heads=a.num_kv_heads,
        head_dim=a.head_dim,
        rope_theta=a.rope.theta,
        rms_norm_eps=c.norm_eps,
        tie_word_embeddings=c.tie_embeddings,
        max_position_embeddings=2048,
        attn_implementation="sdpa",
        torch_dtype="float32",
    )


def torch_step(case: Case):
    """A no-argument callable running one PyTorch KD step, or None without torch."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    cls = (
        transformers.NemotronHForCausalLM
        if case.family == "nemotron_h"
        else transformers.LlamaForCausalLM
    )
    torch.manual_seed(0)
    student = cls(hf_config(case.student, case.family))
    teacher = cls(hf_config(case.teacher, case.family)).eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01)
    tokens = torch.randint(0, case.student.vocab_size, (case.batch, case.seq_len))

    def step():
        with torch.no_grad():
            t_logp = torch.log_softmax(teacher(tokens).logits.float(), -1)
        s_logp = torch.log_softmax(student(tokens).logits.float(), -1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        kl.backward()
        opt.step()

    return step


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Measured fp32 matmul throughput (GFLOP/s): best of ``reps`` (n, n) @ (n, n) in jax."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def interleaved(steps: dict, reps: int) -> dict[str, list[float]]:
    """Warm each callable up once, then time them in turn ``reps`` times (A B A B ...)."""
    for f in steps.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(reps):
        for k, f in steps.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return times


def run_case(
    case: Case, reps: int, chunk: int, skip_torch: bool, peak: float, baseline: bool
) -> dict:
    jstep, flops = jax_step(case, chunk)
    steps = {"jaxprune": jstep}
    if baseline:
        steps["jaxprune, chunked remat loss"] = jax_step(case, chunk, fused=False)[0]
    tstep = None if skip_torch else torch_step(case)
    if tstep is not None:
        steps["torch"] = tstep
    times = interleaved(steps, reps)
    tokens = case.batch * case.seq_len
    res = {
        "case": case.name,
        "student_params": count_params(case.student)["total"],
        "teacher_params": count_params(case.teacher)["total"],
        "batch": case.batch,
        "seq_len": case.seq_len,
        "step_gflops": flops / 1e9,
    }
    for k, ts in times.items():
        best = min(ts)
        res[k] = {
            "best_s": best,
            "median_s": float(np.median(ts)),
            "tokens_per_s": tokens / best,
            "fraction_of_peak": flops / best / 1e9 / peak,
        }
    if "torch" in res:
        res["ratio_jax_over_torch"] = res["torch"]["best_s"] / res["jaxprune"]["best_s"]
    return res


def to_markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Machine: {meta['machine']}; {meta['threads']} threads; fp32 matmul peak "
        f"{meta['matmul_peak_gflops']:.0f} GFLOP/s; jax {meta['jax']}, torch {meta['torch']}.",
        "",
        "| case | implementation | best s | median s | tokens/s | step GFLOP | "
        "fraction of peak | jaxprune / torch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for k in ("jaxprune", "jaxprune, chunked remat loss", "torch"):
            if k not in r:
                continue
            x = r[k]
            ratio = f"{r['torch']['best_s'] / x['best_s']:.2f}x" if "torch" in r else ""
            lines.append(
                f"| {r['case']} | {k} | {x['best_s']:.3f} | {x['median_s']:.3f} | "
                f"{x['tokens_per_s']:,.0f} | {r['step_gflops']:.0f} | "
                f"{x['fraction_of_peak']:.2f} | {ratio} |"
            )
    lines.append("")
    lines.append("FLOPs: XLA's cost analysis of the jaxprune step (both columns use it).")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--case", default="hybrid,llama135m", help="comma-separated: " + ",".join(cases())
    )
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--chunk", type=int, default=128, help="KD loss sequence chunk (0 = none)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also time the step with the generic chunked (remat) logit loss",
    )
    p.add_argument("--out", default=None, help="write results.{json,md} here")
    args = p.parse_args()
    torch_version = None
    if not args.skip_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
            torch_version = torch.__version__
        except ImportError:
            pass
    peak = matmul_peak()
    all_cases = cases()
    results = []
    for name in args.case.split(","):
        r = run_case(all_cases[name], args.reps, args.chunk, args.skip_torch, peak, args.baseline)
        print(json.dumps(r), flush=True)  # each case as soon as it is done
        results.append(r)
    meta = {
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor()} ({os.cpu_count()} cpus)",
        "matmul_peak_gflops": peak,
        "jax": jax.__version__,
        "torch": torch_version,
        "reps": args.reps,
    }
    md = to_markdown(results, meta)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        (out / "results.md").write_text(md)


if __name__ == "__main__":
    main()
