"""The miniature Nemotron Elastic experiment, on the ablation study's teacher and data.

One elastic run over ``budgets`` with T tokens against, for each smaller budget, a separate
compression to the same architecture (the elastic child's widths and skipped blocks, cut
from the teacher by importance like Minitron, then distilled with T / (number of smaller
budgets) tokens: equal total tokens) and against zero-shot slicing (that architecture cut
from the permuted teacher with no training at all). Held-out losses, parameter counts,
tokens and wall time go to ``OUT/elastic_mini.json`` and ``OUT/ELASTIC.md`` with a figure
of the router's chosen architecture per budget. Every run is cached like the study's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from jaxprune.atomic import atomic_write_text
from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, MoEConfig
from jaxprune.counts import count_params
from jaxprune.elastic.extract import extract
from jaxprune.elastic.objective import ElasticConfig
from jaxprune.elastic.run import SpaceArgs, load_elastic, prepare, resolve_budgets, train_elastic
from jaxprune.pruning.scoring import Scores, score_model
from jaxprune.small_lm import small_train_config
from jaxprune.study.config import StudyConfig
from jaxprune.study.run import machine_info, open_study
from jaxprune.study.runs import train_resumable


@dataclasses.dataclass(frozen=True)
class MiniConfig:
    """``elastic_steps`` x the study's batch x seq_len = T tokens."""

    budgets: tuple[float, ...] = (1.0, 0.75, 0.5)
    elastic_steps: int = 250
    router_lr: float = 1e-2
    depth_batches: int = 4
    fractions: tuple[float, ...] = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375)
    align: int = 8  # 1 for the tiny and quick teachers, whose axes are small

    def space(self) -> SpaceArgs:
        return SpaceArgs(fractions=self.fractions, align=self.align)


def _scores(study, mini: MiniConfig) -> Scores:
    inputs = {
        "teacher": study.teacher_key,
        "rows": study.cfg.calib_rows,
        "nmse": mini.depth_batches,
    }
    d = study.cache.dir("elastic_scores", inputs)

    def compute(d: Path) -> dict:
        rows = study.split.calib_rows(study.cfg.seq_len, study.cfg.calib_rows, 0)
        sc = score_model(
            study.teacher, rows, depth_methods=("nmse",), depth_batches=mini.depth_batches
        )
        sc.save(d / "scores.npz", study.teacher_config)
        return {"path": "scores.npz"}

    study.cache.get("elastic_scores", inputs, compute, need=("scores.npz",))
    return Scores.load(d / "scores.npz", study.teacher_config)


def _train_cfg(study, steps: int, distill: bool = True):
    c = study.cfg
    return small_train_config(
        steps, batch_size=c.batch_size, seq_len=c.seq_len, lr=c.lr, seed=0, distill=distill
    )


def run_elastic_mini(
    cfg: StudyConfig,
    mini: MiniConfig,
    out: Path,
    *,
    teacher: str | None = None,
    data: str | None = None,
    command: str = "",
) -> dict:
    out = Path(out)
    study, tinfo = open_study(cfg, out, teacher=teacher, data=data)
    full = count_params(study.teacher_config)["total"]
    budgets = resolve_budgets(mini.budgets, full)
    scores = _scores(study, mini)
    tokens = mini.elastic_steps * cfg.batch_size * cfg.seq_len
    el_inputs = {"teacher": study.teacher_key, "mini": dataclasses.asdict(mini), "lr": cfg.lr}

    def train(d: Path) -> dict:
        t0 = time.perf_counter()
        tc = _train_cfg(study, mini.elastic_steps)
        el = ElasticConfig(budgets, router_lr=mini.router_lr)
        res = train_elastic(
            study.teacher, scores, train_source=study.split.train_corpus(), out=d / "run",
            train=tc, elastic=el, space_args=mini.space(),
            resume=(d / "run" / "checkpoints").is_dir(),
        )  # fmt: skip
        if res.status != "done":
            raise RuntimeError(f"elastic run {res.status} at step {res.step}; rerun to resume")
        return {"wall_s": time.perf_counter() - t0, "tokens": tokens}

    el_res = study.cache.get("elastic", el_inputs, train, need=("run/elastic.json",))
    e = load_elastic(study.cache.dir("elastic", el_inputs) / "run")
    permuted, space = prepare(study.teacher, scores, mini.space())
    smaller = [b for b in budgets if b < full]
    rows = []
    for b in budgets:
        rec = e.child_record(b)
        row = {
            "budget": b / full,
            "params": rec["params"],
            "choices": rec["choices"],
            "elastic_loss": study.loss(e.child(b)),
            "zero_shot_loss": study.loss(extract(permuted, space, rec["choices"])),
        }
        if b < full:
            row.update(_separate(study, permuted, space, rec, len(smaller), mini, tokens))
        else:
            row["teacher_loss"] = study.teacher_loss()
        rows.append(row)
    res = {
        "command": command,
        "study_size": cfg.size,
        "mini": dataclasses.asdict(mini),
        "teacher": {"params": full, "loss": study.teacher_loss(), **tinfo},
        "elastic": {**el_res, "moves": [e.child_record(b)["moves"] for b in budgets]},
        "rows": rows,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "computed_this_run": list(study.cache.computed),
    }
    atomic_write_text(out / "elastic_mini.json", json.dumps(res, indent=1))
    _figure(out / "elastic_arch.png", e, budgets)
    atomic_write_text(out / "ELASTIC.md", render(res))
    return res


def _separate(study, permuted, space, rec, n_small, mini, tokens) -> dict:
    """The same architecture cut from the teacher and distilled on its own share of T."""
    steps = max(1, mini.elastic_steps // n_small)
    inputs = {"teacher": study.teacher_key, "choices": rec["choices"], "steps": steps,
              "lr": study.cfg.lr}  # fmt: skip

    def compute(d: Path) -> dict:
        t0 = time.perf_counter()
        child = extract(permuted, space, rec["choices"])
        model = train_resumable(
            _train_cfg(study, steps), child, study.split, d / "run", study.teacher
        )
        return {"loss": study.loss(model), "wall_s": time.perf_counter() - t0}

    r = study.cache.get("separate", inputs, compute)
    return {
        "separate_loss": r["loss"],
        "separate_tokens": steps * study.cfg.batch_size * study.cfg.seq_len,
        "separate_wall_s": r["wall_s"],
    }


def _kept_fraction(cfg, child_cfg, kept_blocks) -> list[float]:
    """Per parent block: the child's share of its units (0 = skipped)."""
    out, j = [], 0
    for i, layer in enumerate(cfg.layers):
        if i not in kept_blocks:
            out.append(0.0)
            continue
        c = child_cfg.layers[j]
        j += 1
        if isinstance(layer, MLPConfig):
            out.append(c.intermediate / layer.intermediate)
        elif isinstance(layer, Mamba2Config):
            out.append(c.num_heads * c.head_dim / (layer.num_heads * layer.head_dim))
        elif isinstance(layer, AttentionConfig):
            out.append(c.num_heads / layer.num_heads)
        elif isinstance(layer, MoEConfig):
            out.append(c.num_experts / layer.num_experts)
    return out


def _figure(path: Path, e, budgets) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = e.parent.config
    n = len(cfg.layers)
    fig, ax = plt.subplots(figsize=(max(6, n * 0.5), 3.2))
    width = 0.8 / len(budgets)
    for k, b in enumerate(budgets):
        rec = e.child_record(b)
        kept = e.space.kept(rec["choices"])
        blocks = set(kept.get("depth", range(n)))
        child = e.child(b).config
        frac = _kept_fraction(cfg, child, blocks)
        share = rec["params"] / e.info["parent_params"]
        label = f"{share:.0%} (hidden {child.hidden} of {cfg.hidden})"
        ax.bar(np.arange(n) + k * width, frac, width, label=label)
    ax.set_xticks(np.arange(n) + 0.4 - width / 2, list(cfg.pattern))
    ax.set_ylabel("units kept per block")
    ax.set_xlabel("block (M Mamba2, * attention, - MLP, E MoE); 0 = skipped")
    ax.legend(title="child")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(res: dict) -> str:
    t = res["teacher"]
    lines = [
        "# Nemotron Elastic, miniature",
        "",
        f"`{res['command']}`, {res['date']}, {res['machine']['platform']}, "
        f"{res['machine']['cpus']} CPUs.",
        "",
        f"Teacher: {t['params']:,} parameters, held-out loss {t['loss']:.3f}. Elastic run: "
        f"{res['elastic']['tokens']:,} tokens, {res['elastic']['wall_s']:.0f} s. Separate "
        "compressions: the elastic child's architecture cut from the teacher by importance, "
        "each distilled on an equal share of the elastic run's tokens.",
        "",
        "| budget | params | elastic child | separate (tokens) | zero-shot slice |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        sep = "-" if "separate_loss" not in r else (
            f"{r['separate_loss']:.3f} ({r['separate_tokens']:,})"
        )  # fmt: skip
        lines.append(
            f"| {r['budget']:.0%} | {r['params']:,} | {r['elastic_loss']:.3f} | {sep} | "
            f"{r['zero_shot_loss']:.3f} |"
        )
    lines += ["", "![chosen architectures](elastic_arch.png)", ""]
    return "\n".join(lines)
