"""Pod plan: memory per device and expected tokens/s for distilling Nemotron-H 8B -> 4B on
8 x H100 80 GB, from XLA's compiled memory analysis of the real jitted KD step on abstract
shapes (no weights) with fake host devices and the rules of `jaxprune.sharding`.

    python -m experiments.scale_plan [--mesh 1,8,1 --mesh 1,4,2] [--seq-len 8192]
        [--mfu 0.4] [--out runs/scale_plan] [--tiny]

Compiling all 52 blocks on a CPU is slow, so each layout is compiled at three reduced depths
with the full widths ("M-*", "M-M-*": one more Mamba2 + MLP pair, "M-**": one more attention
block; teacher and student alike) and memory is extrapolated linearly per block kind to the
full pattern (24 pairs, 4 attention blocks). ``--tiny``: tiny configs and short sequences (the
CI test). Writes results.json / results.md under ``--out`` and prints the table.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402

from experiments.kd_step import build_abstract, flops, kd_train_config, memory  # noqa: E402
from experiments.scale_model import (  # noqa: E402
    H100_BF16_TFLOPS,
    H100_HBM_GIB,
    flops_per_token,
    per_device_bytes,
)
from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig  # noqa: E402
from jaxprune.converters.families import family_module  # noqa: E402
from jaxprune.counts import count_params  # noqa: E402
from jaxprune.sharding import make_mesh  # noqa: E402

ARCH = Path(__file__).parent / "configs/recipes/arch/nemotron_h_8b.json"
#: experiments/configs/recipes/nemotron_h_8b_to_4b.gin's targets
TARGETS_4B = {"hidden": 3072, "intermediate": 12288, "mamba_heads": 112}
PROBES = {"base": "M-*", "pair": "M-M-*", "attn": "M-**"}


def teacher_8b() -> ModelConfig:
    return family_module("nemotron_h").config_from_hf(json.loads(ARCH.read_text()))


def student_4b(teacher: ModelConfig) -> ModelConfig:
    """The recipe's width-pruned student: hidden 3072, FFN 12288, 112 Mamba heads."""

    def one(layer):
        if isinstance(layer, MLPConfig):
            return dataclasses.replace(layer, intermediate=TARGETS_4B["intermediate"])
        if isinstance(layer, Mamba2Config):
            return dataclasses.replace(layer, num_heads=TARGETS_4B["mamba_heads"])
        return layer

    layers = tuple(one(layer) for layer in teacher.layers)
    return teacher.replace(hidden=TARGETS_4B["hidden"], layers=layers, name="nemotron-h-4b")


def tiny_pair() -> tuple[ModelConfig, ModelConfig]:
    """(teacher, student) of the same block kinds at toy widths (the CI test)."""
    t = ModelConfig.from_pattern(
        "M-M*-M-",
        vocab_size=512,
        hidden=64,
        mamba=Mamba2Config(num_heads=8, head_dim=16, state=16, n_groups=2, chunk_size=32),
        attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=16),
        mlp=MLPConfig(intermediate=128),
        name="tiny-teacher",
    )
    s = t.replace(hidden=48, layers=tuple(_shrink_tiny(x) for x in t.layers), name="tiny-student")
    return t, s


def _shrink_tiny(layer):
    if isinstance(layer, MLPConfig):
        return dataclasses.replace(layer, intermediate=96)
    if isinstance(layer, Mamba2Config):
        return dataclasses.replace(layer, num_heads=6)
    return layer


def with_pattern(cfg: ModelConfig, pattern: str) -> ModelConfig:
    """``cfg`` with its blocks replaced by ``pattern``, each char taking the first block of
    that kind (the widths of a uniform stack)."""
    first = {}
    for layer in cfg.layers:
        first.setdefault(layer.char, layer)
    return cfg.replace(layers=tuple(first[c] for c in pattern))


def compile_probe(teacher, student, pattern: str, mesh, train, remat: bool) -> dict:
    t0 = time.perf_counter()
    s, t = with_pattern(student, pattern), with_pattern(teacher, pattern)
    built = build_abstract(s, t, train.replace(remat="block" if remat else "none"), mesh)
    compiled = built.compile()
    print(f"[scale_plan] {pattern} remat={remat}: {time.perf_counter() - t0:.0f} s", flush=True)
    return {
        "pattern": pattern,
        "memory": memory(compiled),
        "xla_flops": flops(compiled),
        "args_expected": per_device_bytes(built.args, mesh),
        "compile_s": time.perf_counter() - t0,
    }


def extrapolate(probes: dict[str, dict], n_pairs: int, n_attn: int, get) -> float:
    """Linear per block kind: base + (pairs - 1) * d_pair + (attn - 1) * d_attn, of
    ``get(probe)``."""
    base, pair, attn = (get(probes[k]) for k in ("base", "pair", "attn"))
    return base + (n_pairs - 1) * (pair - base) + (n_attn - 1) * (attn - base)


def _variant(teacher, student, mesh, train, remat: bool) -> dict:
    """Probes compiled, then memory (and XLA FLOPs) extrapolated to the full pattern."""
    probes = {k: compile_probe(teacher, student, p, mesh, train, remat) for k, p in PROBES.items()}
    n_pairs, n_attn = student.pattern.count("M"), student.pattern.count("*")
    if student.pattern.count("-") != n_pairs or len(student.pattern) != 2 * n_pairs + n_attn:
        raise ValueError("the extrapolation assumes a stack of M- pairs and * blocks")

    def ext(section: str) -> dict:
        keys = probes["base"][section]
        return {k: extrapolate(probes, n_pairs, n_attn, lambda p, k=k: p[section][k]) for k in keys}

    xla = None
    if probes["base"]["xla_flops"]:
        xla = extrapolate(probes, n_pairs, n_attn, lambda p: p["xla_flops"])
    return {
        "probes": probes,
        "full": ext("memory"),
        "full_args_expected": ext("args_expected"),
        "xla_flops_per_device_step": xla,
    }


def plan_layout(teacher, student, mesh_shape, seq_len, global_batch, mfu, remats) -> dict:
    data, fsdp, tensor = mesh_shape
    n_dev = math.prod(mesh_shape)
    mesh = make_mesh(data, fsdp, tensor, devices=jax.devices()[:n_dev])
    micro = data * fsdp  # one sequence per batch shard per micro-step
    train = kd_train_config(2 * micro, seq_len, grad_accum=2)  # 2 micro-steps compiled
    fpt = flops_per_token(teacher, student, seq_len)
    out = {
        "mesh": {"data": data, "fsdp": fsdp, "tensor": tensor},
        "micro_batch": micro,
        "grad_accum_for_global_batch": max(1, global_batch // micro),
        "flops_per_token": fpt,
        "variants": {},
    }
    for remat in remats:
        name = "block_remat" if remat else "no_remat"
        v = _variant(teacher, student, mesh, train, remat)
        tokens = n_dev * H100_BF16_TFLOPS * 1e12 * mfu / fpt[f"train_{name}"]
        v["tokens_per_s"] = tokens
        v["step_s_global_batch"] = global_batch * seq_len / tokens
        v["fits_80gb"] = v["full"]["peak"] < H100_HBM_GIB * 2**30
        out["variants"][name] = v
    return out


def with_impls(cfg: ModelConfig, attn_impl: str | None, ssd_impl: str | None) -> ModelConfig:
    """Every attention block computed by ``attn_impl`` (``AttentionConfig.attn_impl``) and
    every Mamba2 block by ``ssd_impl`` (``Mamba2Config.ssd_impl``); None keeps the config's.

    Pinned because "auto" resolves on the compiling backend (the CPU here), not the GPUs
    being planned for."""

    def one(x):
        if attn_impl is not None and isinstance(x, AttentionConfig):
            return dataclasses.replace(x, attn_impl=attn_impl)
        if ssd_impl is not None and isinstance(x, Mamba2Config):
            return dataclasses.replace(x, ssd_impl=ssd_impl)
        return x

    return cfg.replace(layers=tuple(one(x) for x in cfg.layers))


def run(
    tiny: bool,
    meshes: list,
    seq_len: int,
    mfu: float,
    remats=(False, True),
    attn_impl: str | None = "blockwise",
    ssd_impl: str | None = "reference",
) -> dict:
    teacher, student = tiny_pair() if tiny else (teacher_8b(), None)
    student = student or student_4b(teacher)
    teacher = with_impls(teacher, attn_impl, ssd_impl)
    student = with_impls(student, attn_impl, ssd_impl)
    layouts = [plan_layout(teacher, student, m, seq_len, 768, mfu, remats) for m in meshes]
    return {
        "teacher": {"name": teacher.name, "params": count_params(teacher)["total"]},
        "student": {"name": student.name, "params": count_params(student)["total"]},
        "seq_len": seq_len,
        "global_batch": 768,
        "mfu": mfu,
        "peak_tflops": H100_BF16_TFLOPS,
        "jax": jax.__version__,
        "attn_impl": attn_impl or "default",
        "ssd_impl": ssd_impl or "default",
        "layouts": layouts,
    }


def main(argv: list[str] | None = None) -> dict:
    from experiments.scale_report import to_markdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mesh", action="append", default=None, help="data,fsdp,tensor")
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--remat", choices=("both", "none", "block"), default="both")
    ap.add_argument(
        "--attn-impl", default="blockwise", help="AttentionConfig.attn_impl of every block"
    )
    ap.add_argument(
        "--ssd-impl",
        default="reference",
        help='Mamba2Config.ssd_impl of every block ("reference": what "auto" takes on a GPU)',
    )
    ap.add_argument("--out", default="runs/scale_plan")
    args = ap.parse_args(argv)
    meshes = [tuple(int(v) for v in m.split(",")) for m in (args.mesh or ["1,8,1", "1,4,2"])]
    seq = args.seq_len or (128 if args.tiny else 8192)
    remats = {"both": (False, True), "none": (False,), "block": (True,)}[args.remat]
    res = run(args.tiny, meshes, seq, args.mfu, remats, args.attn_impl, args.ssd_impl)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res)
    (out / "results.md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
