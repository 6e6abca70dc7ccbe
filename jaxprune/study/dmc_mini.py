"""The miniature DMC experiment (issue 14, item 4), on the ablation study's data split.

For each model kind (a Llama-style transformer, where the KV cache is all the state, and a
Mamba2 + attention hybrid) a teacher is trained on the training part. Then, at each
compression ratio r, two students with an r-times smaller KV cache are made from it and
trained for the same tokens, both distilled from the teacher:

* DMC: the retrofit (:func:`jaxprune.dmc.run.retrofit_dmc`), target ratio r;
* GQA: the KV heads mean-pooled r to 1 (:func:`jaxprune.dmc.gqa.pool_kv_heads`), then
  up-trained.

Each gets its held-out loss before and after, its measured compression on held-out rows
(DMC, per block and KV head), and a long-context measurement: greedy decode after a
held-out prompt of ``context`` tokens (decode tokens/s, cache bytes allocated and used).
From those bytes comes the largest batch whose weights + caches fit ``memory_gb``; a DMC
cache is counted as allocated after the prefill (cut to the slots it used plus the tokens
still to decode, :meth:`~jaxprune.nn.cache.Cache.fit_dmc`). Results go to ``OUT/dmc_mini.json`` and
``OUT/DMC.md`` with a heatmap of the compression per block and head. Every run is cached
like the study's (:class:`~jaxprune.study.cache.RunCache`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import jax.numpy as jnp

from jaxprune.atomic import atomic_write_text
from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, RopeConfig
from jaxprune.converters.native import load_native
from jaxprune.counts import count_params
from jaxprune.dmc.gqa import pool_kv_heads
from jaxprune.dmc.measure import kv_compression
from jaxprune.dmc.objective import DMCTrainConfig
from jaxprune.dmc.run import dmc_student, retrofit_dmc
from jaxprune.evaluation import evaluate_lm_loss
from jaxprune.inference.bench import bench_one
from jaxprune.nn.model import init_model
from jaxprune.small_lm import small_train_config
from jaxprune.study.cache import RunCache
from jaxprune.study.config import StudyConfig
from jaxprune.study.data import default_data, prepare
from jaxprune.study.run import machine_info
from jaxprune.study.runs import resume_or_clear, train_resumable

#: bumped to re-time every variant (no retraining): when the decode path changes, or to
#: time them on a quiet machine (4: after the fitted DMC cache, nothing else running)
BENCH_VERSION = 4


@dataclasses.dataclass(frozen=True)
class DMCMiniConfig:
    """The experiment's sizes: ``teacher_steps`` / ``retrofit_steps`` x the study's batch x
    sequence length tokens; the models' width, depth and attention heads."""

    kinds: tuple[str, ...] = ("llama", "hybrid")
    ratios: tuple[int, ...] = (2, 4)
    hidden: int = 256
    layers: int = 4  # attention blocks (each followed by an MLP; the hybrid adds Mamba2)
    heads: int = 8
    kv_heads: int = 4
    head_dim: int = 32
    ffn: int = 704
    teacher_steps: int = 400
    retrofit_steps: int = 100
    context: int = 4096
    decode_new: int = 32
    memory_gb: float = 0.25
    dmc_weight: float = 1.0


def architecture(kind: str, vocab: int, mini: DMCMiniConfig) -> ModelConfig:
    """The teacher of ``kind``: ``llama`` (*-*-...) or ``hybrid`` (M-*-M-*-...)."""
    attn = AttentionConfig(num_heads=mini.heads, num_kv_heads=mini.kv_heads,
                           head_dim=mini.head_dim, rope=RopeConfig(theta=10000.0))  # fmt: skip
    if kind == "llama":
        return ModelConfig.from_pattern("*-" * mini.layers, vocab_size=vocab, hidden=mini.hidden,
                                        attention=attn, mlp=MLPConfig(mini.ffn, "swiglu"),
                                        name="dmc-mini-llama")  # fmt: skip
    mamba = Mamba2Config(num_heads=mini.heads, head_dim=2 * mini.hidden // mini.heads,
                         state=32, n_groups=2, chunk_size=64)  # fmt: skip
    return ModelConfig.from_pattern("M-*-" * mini.layers, vocab_size=vocab, hidden=mini.hidden,
                                    mamba=mamba, attention=attn, mlp=MLPConfig(mini.ffn),
                                    name="dmc-mini-hybrid")  # fmt: skip


def run_dmc_mini(
    cfg: StudyConfig, mini: DMCMiniConfig, out: Path, *, data: str | None = None, command=""
) -> dict:
    out = Path(out)
    path = Path(data) if data else default_data()
    split, _ = prepare(path, out / "data", vocab_size=cfg.vocab_size,
                       held_fraction=cfg.held_fraction)  # fmt: skip
    cache = RunCache(out)
    held = split.held_rows(cfg.seq_len, cfg.eval_rows)
    long_prompt = split.tokens[split.n_train :][: mini.context]
    if len(long_prompt) < mini.context:
        raise ValueError(f"dmc_mini: the held-out part is shorter than {mini.context} tokens")
    data_key = {"source": split.source, "n_train": split.n_train}

    def loss(model) -> float:
        return float(evaluate_lm_loss(model, held, batch_size=8)["loss"])

    def train_cfg(steps: int, distill: bool):
        return small_train_config(steps, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                                  lr=cfg.lr, seed=0, distill=distill)  # fmt: skip

    rows, teachers = [], {}
    for kind in mini.kinds:
        tcfg = architecture(kind, cfg.vocab_size, mini)
        t_inputs = {"config": tcfg.to_dict(), "steps": mini.teacher_steps, "data": data_key,
                    "batch": cfg.batch_size, "seq_len": cfg.seq_len, "lr": cfg.lr}  # fmt: skip

        def train_teacher(d: Path, tcfg=tcfg) -> dict:
            m = train_resumable(train_cfg(mini.teacher_steps, False), init_model(tcfg, 0),
                                split, d / "model")  # fmt: skip
            return {"loss": loss(m)}

        t = cache.get("dmc_teacher", t_inputs, train_teacher, need=("model/jaxprune.json",))
        t_dir = cache.dir("dmc_teacher", t_inputs) / "model"
        teachers[kind] = {"params": count_params(tcfg)["total"], "loss": t["loss"]}
        variants = [("plain", 1)] + [(m, r) for r in mini.ratios for m in ("dmc", "gqa")]
        for method, r in variants:
            inputs = {"teacher": t_inputs, "method": method, "ratio": r,
                      "steps": mini.retrofit_steps, "weight": mini.dmc_weight,
                      "context": mini.context, "new": mini.decode_new}  # fmt: skip

            def run(d: Path, method=method, r=r, t_dir=t_dir) -> dict:
                teacher = load_native(t_dir)[0]
                t0 = time.perf_counter()
                if method == "plain":
                    model, before = teacher, None
                elif method == "gqa":
                    start = pool_kv_heads(teacher, r)
                    before = loss(start)
                    model = train_resumable(train_cfg(mini.retrofit_steps, True), start, split,
                                            d / "model", teacher)  # fmt: skip
                else:
                    dmc = DMCTrainConfig(target_ratio=float(r), weight=mini.dmc_weight)
                    before = loss(dmc_student(teacher, dmc))
                    run_dir = d / "model"
                    retrofit_dmc(teacher, train_source=split.train_corpus(), out=run_dir,
                                 train=train_cfg(mini.retrofit_steps, True), dmc=dmc,
                                 resume=resume_or_clear(run_dir))  # fmt: skip
                    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                    model = load_native(run_dir)[0]
                wall = time.perf_counter() - t0
                kv = kv_compression(model, held) if method == "dmc" else None
                return {"loss_before": before, "loss": loss(model), "kv_compression": kv,
                        "train_wall_s": wall}  # fmt: skip

            res = cache.get("dmc_variant", inputs, run)
            b_inputs = {**inputs, "bench": BENCH_VERSION}

            def bench(d: Path, method=method, inputs=inputs, t_dir=t_dir) -> dict:
                if method == "plain":
                    model_dir = t_dir
                else:  # the trained student (retrained if its files are gone)
                    cache.get("dmc_variant", inputs, run, need=("model/jaxprune.json",))
                    model_dir = cache.dir("dmc_variant", inputs) / "model"
                model = load_native(model_dir)[0]
                return bench_one(model, prompt_len=mini.context, batch=1,
                                 gen_len=mini.decode_new, repeats=2,
                                 prompt=jnp.asarray(long_prompt[None]))  # fmt: skip

            res = {**res, "bench": cache.get("dmc_bench", b_inputs, bench)}
            rows.append(_row(kind, method, r, res, mini, tcfg))
    result = {
        "command": command,
        "study_size": cfg.size,
        "mini": dataclasses.asdict(mini),
        "teachers": teachers,
        "teacher_tokens": mini.teacher_steps * cfg.batch_size * cfg.seq_len,
        "retrofit_tokens": mini.retrofit_steps * cfg.batch_size * cfg.seq_len,
        "seq_len": cfg.seq_len,
        "eval_rows": int(len(held)),
        "rows": rows,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "computed_this_run": list(cache.computed),
    }
    atomic_write_text(out / "dmc_mini.json", json.dumps(result, indent=1))
    _heatmap(out / "dmc_heads.png", rows)
    from jaxprune.study.dmc_report import render

    atomic_write_text(out / "DMC.md", render(result))
    return result


def _row(kind: str, method: str, r: int, res: dict, mini: DMCMiniConfig, cfg: ModelConfig):
    """One table row: the measurements plus the cache per sequence and the largest batch
    within ``memory_gb`` (weights fp32 + per-sequence caches; DMC at its used slots)."""
    b = res["bench"]
    kv = b["kv_bytes_per_seq"]  # allocated: for DMC the fitted buffers (Cache.fit_dmc)
    per_seq = kv + b["ssm_bytes_per_seq"]
    weights = 4 * count_params(cfg)["total"]
    budget = mini.memory_gb * 1e9
    return {
        "kind": kind, "method": method, "ratio": r, "loss_before": res["loss_before"],
        "loss": res["loss"], "kv_compression": res["kv_compression"],
        "long_kv_compression": b["kv_compression"], "decode_tok_s": b["decode_tok_s"],
        "prefill_tok_s": b["prefill_tok_s"], "kv_bytes_per_seq": kv,
        "kv_used_bytes_per_seq": b["kv_used_bytes_per_seq"], "state_bytes_per_seq": per_seq,
        "max_batch": int(max(0, budget - weights) // max(per_seq, 1)),
        "train_wall_s": res["train_wall_s"],
    }  # fmt: skip


def _heatmap(path: Path, rows: list[dict]) -> None:
    """Tokens per slot per (block, KV head) of every DMC student, on held-out rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    dmc = [r for r in rows if r["method"] == "dmc" and r["kv_compression"]]
    if not dmc:
        return
    fig, axes = plt.subplots(1, len(dmc), figsize=(3.2 * len(dmc), 3), squeeze=False)
    for ax, r in zip(axes[0], dmc, strict=True):
        blocks = r["kv_compression"]["blocks"]
        grid = np.array([b["heads"] for b in blocks.values()])
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.set_title(f"{r['kind']} DMC {r['ratio']}x: {r['kv_compression']['ratio']:.2f}x")
        ax.set_yticks(range(len(blocks)), [f"block {i}" for i in blocks])
        ax.set_xlabel("KV head")
        for (y, x), v in np.ndenumerate(grid):
            ax.text(x, y, f"{v:.1f}", ha="center", va="center", color="w", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
