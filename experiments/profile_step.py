"""Profile of the training and distillation steps on XLA:CPU: where the time goes.

    python experiments/profile_step.py [--case fwdbwd10m,kd135m,kdhybrid] [--reps 3]
                                       [--out runs/profile_step]

Cases:
  fwdbwd10m  ``bench-10m`` forward + backward of the mean next-token NLL, b=4 x T=512, fp32
             (the ``experiments/bench_cpu.py`` shape);
  kd135m     one KD step, 135M Llama-shape teacher -> its pruned student (hidden 432, FFN
             768), b=4 x T=256 (``experiments/bench_kd.py``'s ``llama135m`` case);
  kdhybrid   one KD step of ``bench_kd.py``'s hybrid case (bench-10m student).
For each: (1) the per-category breakdown of the compiled program, from the optimized HLO
(categories from each op's Python stack, see ``experiments/hlo_profile.py``): time summed
over ``jax.profiler`` per-thunk events, and matmul FLOPs; (2) ablation timings of parts of
the step (teacher forward alone, loss head alone, gradients without the optimizer, ...),
with XLA's cost-analysis FLOPs and the fraction of the measured fp32 matmul peak; (3)
compile time, recompilations over repeated steps, host transfers and data loading.
Prints Markdown and writes ``results.json`` / ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import hlo_profile
from experiments.bench_kd import build_jax, cases, host_batch, matmul_peak
from jaxprune.data.pipeline import make_train_iterator
from jaxprune.data.sources import Corpus
from jaxprune.nn.model import init_model
from jaxprune.presets import bench_10m
from jaxprune.train import LossConfig
from jaxprune.train.losses import chunked_logit_losses
from jaxprune.train.optim import make_schedule
from jaxprune.train.state import place
from jaxprune.train.step import batch_shardings, hidden_states, make_step_fn, micro_losses


def best_of(fn, args: tuple, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def cost_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", 0.0))


def ablation(name: str, fn, args: tuple, reps: int, peak: float) -> dict:
    """Compile (timed), cost-analyse and time ``fn(*args)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    flops = cost_flops(compiled)
    best = best_of(compiled, args, reps)
    return {
        "what": name,
        "best_s": best,
        "gflop": flops / 1e9,
        "fraction_of_peak": flops / best / 1e9 / peak,
        "compile_s": compile_s,
    }


def breakdown(compiled, args: tuple, reps: int) -> list[dict]:
    """Per-category traced time and matmul FLOPs of one compiled program (not donating)."""
    mod = hlo_profile.parse(compiled.as_text())
    times = hlo_profile.traced_times(compiled, args, hlo_profile.thunk_categories(mod), reps)
    flops = hlo_profile.dot_flops(mod)
    total = sum(times.values()) or 1.0
    rows = []
    for cat in sorted(set(times) | set(flops), key=lambda c: -times.get(c, 0.0)):
        t, f = times.get(cat, 0.0), flops.get(cat, 0.0)
        rows.append(
            {
                "category": cat,
                "time_s": t,
                "share": t / total,
                "matmul_gflop": f / 1e9,
                "gflop_per_s": f / 1e9 / t if t > 0 else 0.0,
            }
        )
    return rows


def fwdbwd_case(reps: int, peak: float) -> dict:
    cfg = bench_10m()
    graphdef, params, rest = nnx.split(init_model(cfg, 0), nnx.Param, ...)
    tokens = jax.random.randint(jax.random.key(0), (4, 513), 0, cfg.vocab_size)

    def loss(p, tokens):
        logits = nnx.merge(graphdef, p, rest)(tokens[:, :-1])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

    args = (params, tokens)
    fb = jax.value_and_grad(loss)
    abl = [
        ablation("forward", loss, args, reps, peak),
        ablation("forward+backward", fb, args, reps, peak),
    ]
    compiled = jax.jit(fb).lower(*args).compile()
    bd = breakdown(compiled, args, reps)
    return {"case": "fwdbwd10m", "shape": "bench-10m, b=4, T=512, fp32",
            "tokens": 4 * 512, "breakdown": bd, "ablations": abl}  # fmt: skip


def kd_ablations(b: dict, reps: int, peak: float) -> list[dict]:
    """The step and its parts, each jitted on its own."""
    s, t_def, loss_cfg = b["student"], b["teacher_def"], b["cfg"].loss
    state, rest, t_state = b["state"], b["rest"], b["teacher"]
    micro = jax.tree.map(lambda x: x[0], b["batch"])
    count = jnp.asarray(float(micro["loss_mask"].size))
    params = state["params"]

    def teacher_fwd(t_state, micro):
        return hidden_states(nnx.merge(t_def, t_state), micro)[0]

    def student_fwd(params, micro):
        return hidden_states(nnx.merge(s.graphdef, params["model"], rest), micro)[0]

    hs = jax.jit(student_fwd)(params, micro)
    ht = jax.jit(teacher_fwd)(t_state, micro)

    def head_loss(params, hs, ht, t_state, micro):
        m = nnx.merge(s.graphdef, params["model"], rest)
        tm = nnx.merge(t_def, t_state)
        sums = chunked_logit_losses(
            hs, m.logits, micro["targets"], micro["loss_mask"], loss_cfg, ht, tm.logits
        )
        return sums["kl"] / count

    kd = functools.partial(micro_losses, student_def=s.graphdef, teacher_def=t_def, loss=loss_cfg,
                           fused=b["fused"])  # fmt: skip
    ce_cfg = LossConfig(kl="none", ce_weight=1.0, chunk=loss_cfg.chunk)
    ce = functools.partial(micro_losses, student_def=s.graphdef, teacher_def=None, loss=ce_cfg,
                           fused=b["fused"])  # fmt: skip

    def step(state, rest, t_state, batch):
        return b["fn"](state, rest, t_state, batch)

    hargs = (params, hs, ht, t_state, micro)
    ce_grad = jax.grad(lambda p, m: ce(p, rest, None, m, count)[0])
    kd_grad = jax.grad(lambda p, t, m: kd(p, rest, t, m, count)[0])
    cases_ = [
        ("teacher forward (hidden states)", teacher_fwd, (t_state, micro)),
        ("student forward (hidden states)", student_fwd, (params, micro)),
        ("KD loss head forward (2 LM heads + KL)", head_loss, hargs),
        ("KD loss head fwd+bwd", jax.grad(head_loss, argnums=(0, 1)), hargs),
        ("student fwd+bwd, CE only (no teacher)", ce_grad, (params, micro)),
        ("KD gradients (no optimizer)", kd_grad, (params, t_state, micro)),
    ]
    rows = [ablation(n, f, a, reps, peak) for n, f, a in cases_]
    compiled = b["fn"].lower(state, rest, t_state, b["batch"]).compile()
    flops = cost_flops(compiled)
    box = {"state": state}

    def run_step():
        box["state"], m = b["fn"](box["state"], rest, t_state, b["batch"])
        return m

    run_step()
    best = min(_timed(run_step) for _ in range(reps))
    rows.append({"what": "full train step (jitted, donated state)", "best_s": best,
                 "gflop": flops / 1e9, "fraction_of_peak": flops / best / 1e9 / peak})  # fmt: skip
    b["state"] = box["state"]
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def host_costs(b: dict, case) -> dict:
    """Compile time, cache misses over 3 steps, host->device batch, metrics fetch, data."""
    fn, rest, t_state = b["fn"], b["rest"], b["teacher"]
    host = host_batch(case.student.vocab_size, case.batch, case.seq_len, seed=1)
    sh = batch_shardings(jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                                           ("data", "fsdp", "tensor")))  # fmt: skip
    t0 = time.perf_counter()
    batch = jax.block_until_ready(place(host, sh))
    put_s = time.perf_counter() - t0
    before = fn._cache_size()
    state = b["state"]
    for _ in range(2):
        state, m = fn(state, rest, t_state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    jax.device_get(m)
    get_s = time.perf_counter() - t0
    b["state"] = state
    rng = np.random.default_rng(0)
    n = 200 * case.seq_len
    corpus = Corpus([rng.integers(0, case.student.vocab_size, n).astype(np.int32)],
                    np.arange(0, n, 1000))  # fmt: skip
    it = make_train_iterator(corpus, seq_len=case.seq_len, batch_size=case.batch, seed=0)
    next(it)
    t0 = time.perf_counter()
    for _ in range(5):
        next(it)
    data_s = (time.perf_counter() - t0) / 5
    t0 = time.perf_counter()
    fn.lower(state, rest, t_state, batch).compile()
    compile_s = time.perf_counter() - t0
    return {
        "compile_s": compile_s,
        "recompilations_over_2_steps": fn._cache_size() - before,
        "host_to_device_batch_s": put_s,
        "metrics_fetch_s": get_s,
        "data_loader_next_s": data_s,
    }


def kd_case(name: str, reps: int, peak: float, fused: bool, ablations: bool) -> dict:
    case = cases()[name]
    b = build_jax(case, fused=fused)
    abl = kd_ablations(b, reps, peak) if ablations else []
    # the same step without donation, so that one state can be passed repeatedly
    cfg = b["cfg"]
    raw = make_step_fn(b["student"].graphdef, b["teacher_def"], b["tx"],
                       make_schedule(cfg.optim, cfg.steps), cfg.loss, fused)  # fmt: skip
    args = (b["state"], b["rest"], b["teacher"], b["batch"])
    bd = breakdown(jax.jit(raw).lower(*args).compile(), args, reps)
    label = "kdhybrid" if name == "hybrid" else "kd135m"
    return {"case": label, "shape": f"{case.teacher.name} -> {case.student.name}, "
            f"b={case.batch}, T={case.seq_len}, fp32", "tokens": case.batch * case.seq_len,
            "breakdown": bd, "ablations": abl, "host": host_costs(b, case)}  # fmt: skip


def to_markdown(results: list[dict], meta: dict) -> str:
    out = [f"Machine: {meta['machine']}; fp32 matmul peak {meta['matmul_peak_gflops']:.0f} "
           f"GFLOP/s; jax {meta['jax']}; KD loss: {meta['loss']}.", ""]  # fmt: skip
    for r in results:
        out += [f"### {r['case']}: {r['shape']}", "",
                "| category | traced time (s) | share | matmul GFLOP | GFLOP/s |",
                "|---|---:|---:|---:|---:|"]  # fmt: skip
        for x in r["breakdown"]:
            out.append(f"| {x['category']} | {x['time_s']:.3f} | {x['share']:.0%} | "
                       f"{x['matmul_gflop']:.1f} | {x['gflop_per_s']:.0f} |")  # fmt: skip
        out += ["", "| ablation | best s | GFLOP (cost analysis) | fraction of peak |",
                "|---|---:|---:|---:|"]  # fmt: skip
        for x in r["ablations"]:
            out.append(f"| {x['what']} | {x['best_s']:.3f} | {x['gflop']:.1f} | "
                       f"{x['fraction_of_peak']:.2f} |")  # fmt: skip
        if "host" in r:
            out += ["", "| host-side cost | value |", "|---|---:|"]
            out += [f"| {k} | {v:.4g} |" for k, v in r["host"].items()]
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="fwdbwd10m,kd135m,kdhybrid")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default="runs/profile_step")
    p.add_argument(
        "--loss",
        choices=("fused", "chunked"),
        default="fused",
        help="KD logit loss: fused analytic gradients, or the chunked remat one",
    )
    p.add_argument("--skip-ablations", action="store_true")
    args = p.parse_args()
    peak = matmul_peak()
    results = []
    for name in args.case.split(","):
        if name == "fwdbwd10m":
            results.append(fwdbwd_case(args.reps, peak))
        elif name in ("kd135m", "kdhybrid"):
            case = "llama135m" if name == "kd135m" else "hybrid"
            fused, abl = args.loss == "fused", not args.skip_ablations
            results.append(kd_case(case, args.reps, peak, fused, abl))
        else:
            raise SystemExit(f"unknown case {name!r}")
    meta = {"machine": f"{platform.machine()} ({os.cpu_count()} cpus)", "jax": jax.__version__,
            "matmul_peak_gflops": peak, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "loss": args.loss}  # fmt: skip
    md = to_markdown(results, meta)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (out / "results.md").write_text(md)


if __name__ == "__main__":
    main()
