"""GPU check section: one bf16 knowledge-distillation step (the trainer's jitted step) for
bench-10m and for the ~1B Nemotron-H-style preset, timed, with XLA's compiled memory analysis
and the device's measured peak memory."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from experiments.bench_kd import teacher_config
from experiments.gpu_timing import rate, time_interleaved
from experiments.kd_step import build_real, flops, kd_train_config, memory
from jaxprune.config import ModelConfig
from jaxprune.counts import count_params
from jaxprune.presets import get_preset, nemotron_h_1b, tiny_hybrid
from jaxprune.sharding import make_mesh

#: name: (student, teacher, batch, T). The 1B distils into itself (same shapes as a pruned
#: student of a 1B teacher would be slightly smaller: an upper bound on memory).
CASES = {
    "bench-10m": (lambda: get_preset("bench-10m"), teacher_config, 8, 2048),
    "nemotron-h-1b": (nemotron_h_1b, nemotron_h_1b, 4, 4096),
}


def _dry_config() -> ModelConfig:
    """Every case on a dry run: one Mamba2, one attention and one MLP block, d 32."""
    c = tiny_hybrid()
    layers = tuple(c.layers[i] for i in (0, 1, 3))  # "M-*"
    return c.replace(layers=layers, hidden=32, vocab_size=128, name="dry-hybrid")


DRY = (_dry_config, _dry_config, 2, 64)
BF16_PEAK_TFLOPS = 989.0  # H100 / H200 SXM dense bf16, datasheet


def _with_ssd_impl(cfg: ModelConfig, impl: str) -> ModelConfig:
    layers = tuple(
        dataclasses.replace(layer, ssd_impl=impl) if layer.kind == "mamba2" else layer
        for layer in cfg.layers
    )
    return cfg.replace(layers=layers)


def peak_bytes() -> int | None:
    """The device's peak bytes in use so far (GPU allocators report it; None elsewhere)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def kd_case(name: str, dry: bool, ssd_impl: str = "auto") -> dict:
    """Compile (memory / cost analysis), then time steps; one device."""
    mk_s, mk_t, batch, seq = DRY if dry else CASES[name]
    student, teacher = _with_ssd_impl(mk_s(), ssd_impl), _with_ssd_impl(mk_t(), ssd_impl)
    cfg = kd_train_config(batch, seq)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    t0 = time.perf_counter()
    built = build_real(student, teacher, cfg, mesh)
    compiled = built.compile()
    compile_s = time.perf_counter() - t0
    box = {"state": built.args[0]}
    rest = built.args[1:]

    def step(_: int):
        box["state"], metrics = compiled(box["state"], *rest)
        return metrics

    res = time_interleaved(
        {"step": (step, jax.block_until_ready)},
        rounds=1 if dry else 2,
        reps=2 if dry else 5,
        warmup=1 if dry else 2,
        sets=1,
    )["step"]
    loss = float(step(0)["loss"])
    tokens = batch * seq
    f = flops(compiled)
    n_s, n_t = count_params(student)["total"], count_params(teacher)["total"]
    row = {
        "case": name,
        "ssd_impl": ssd_impl,
        "student_params": n_s,
        "teacher_params": n_t,
        "batch": batch,
        "T": seq,
        "build_and_compile_s": compile_s,
        **res,
        "loss": loss,
        "loss_finite": bool(np.isfinite(loss)),
        "tokens_per_s": tokens / (res["ms"] / 1e3) if "ms" in res else None,
        "xla_flops": f,
        "model_flops": 6 * n_s * tokens + 2 * n_t * tokens,
        "compiled_memory": memory(compiled),
        "peak_bytes_in_use": peak_bytes(),
    }
    row["TFLOPs_xla"] = rate(f, res.get("ms")) if f else None
    row["TFLOPs_model"] = rate(row["model_flops"], res.get("ms"))
    if row["TFLOPs_model"] is not None:
        row["mfu_pct_of_989"] = 100 * row["TFLOPs_model"] / BF16_PEAK_TFLOPS
    return row
