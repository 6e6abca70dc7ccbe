"""The distillation learning-rate sweep behind ``OptimConfig.lr``'s default: the study's
teacher (trained on real text), its width-pruned student (about half the parameters),
distilled at each learning rate for a short and a long run, per seed, every run cached
like the study's. Everything but the learning rate is the library's default schedule
(linear warm-up of ``OptimConfig.warmup``, then cosine)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.study.config import StudyConfig
from jaxprune.study.findings import width_depth
from jaxprune.study.run import machine_info, open_study
from jaxprune.study.stats import mean_std

DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
TOL = 0.01  # nats: the loss a smaller, safer learning rate may give up (recommend_lr)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The grid: learning rates x run lengths (steps) x seeds."""

    lrs: tuple[float, ...] = DEFAULT_LRS
    steps: tuple[int, ...] = (150, 600)
    seeds: int = 2


def best_lr(rows: list[dict], steps: int) -> float:
    """The learning rate with the lowest mean held-out loss at ``steps``."""
    at = [r for r in rows if r["steps"] == steps]
    return min(at, key=lambda r: mean_std(r["loss"])[0])["lr"]


def recommend_lr(rows: list[dict], steps: int, tol: float = TOL) -> float:
    """The smallest learning rate whose mean loss at ``steps`` is within ``tol`` nats of
    the best: the cheapest insurance against instability on models larger than the
    sweep's (the best learning rate falls as models grow), at a cost of at most ``tol``."""
    at = [r for r in rows if r["steps"] == steps]
    best = min(mean_std(r["loss"])[0] for r in at)
    return min(r["lr"] for r in at if mean_std(r["loss"])[0] <= best + tol)


def run_sweep(
    cfg: StudyConfig,
    sweep: SweepConfig,
    out: Path,
    *,
    teacher: str | None = None,
    data: str | None = None,
    command: str = "",
) -> dict:
    """Run (or resume) the sweep under ``out`` (the study's cache layout: a study run in
    the same ``out`` shares the teacher and the prunings); writes ``out/lr_sweep.json``
    and ``out/LR_SWEEP.md``. Losses are held-out next-token cross-entropy (nats);
    ``ppl_ratio`` = exp(loss - teacher loss), the student's perplexity over the teacher's."""
    out = Path(out)
    study, tinfo = open_study(cfg, out, teacher=teacher, data=data)
    width, _ = width_depth(study)
    pruned = study.pruned(width, 0)
    t_loss = study.teacher_loss()
    rows = []
    for steps in sweep.steps:
        for lr in sweep.lrs:
            run = dataclasses.replace(
                study, cfg=dataclasses.replace(cfg, lr=lr, distill_steps=steps)
            )
            losses = [run.distilled(width, s)["loss"] for s in range(sweep.seeds)]
            mean, std = mean_std(losses)
            rows.append(
                {
                    "lr": lr,
                    "steps": steps,
                    "tokens": steps * cfg.batch_size * cfg.seq_len,
                    "loss": losses,
                    "mean": mean,
                    "std": std,
                    "ppl_ratio": math.exp(mean - t_loss),
                }
            )
    res = {
        "command": command,
        "study_size": cfg.size,
        "sweep": dataclasses.asdict(sweep),
        "student": {
            "variant": width.name,
            "params": pruned["params"],
            "zero_shot_loss": pruned["zero_shot_loss"],
        },
        "teacher": {"loss": t_loss, **tinfo},
        "data": {"source": study.split.source, "train_tokens": study.split.n_train},
        "rows": rows,
        "best": {str(s): best_lr(rows, s) for s in sweep.steps},
        "recommended": {"lr": recommend_lr(rows, max(sweep.steps)), "tol": TOL},
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "computed_this_run": list(study.cache.computed),
    }
    atomic_write_text(out / "lr_sweep.json", json.dumps(res, indent=1))
    atomic_write_text(out / "LR_SWEEP.md", render(res))
    return res


def render(res: dict) -> str:
    """The sweep as a markdown table (one row per learning rate, one column per length)."""
    steps = res["sweep"]["steps"]
    by = {(r["lr"], r["steps"]): r for r in res["rows"]}
    head = "| lr | " + " | ".join(f"{s} steps: loss (ppl / teacher)" for s in steps) + " |"
    lines = [
        "# Distillation learning-rate sweep",
        "",
        f"`{res['command']}`, {res['date']}, {res['machine']['platform']}",
        "",
        f"Teacher held-out loss {res['teacher']['loss']:.3f}; student {res['student']['variant']}"
        f" ({res['student']['params']:,} parameters, zero-shot loss "
        f"{res['student']['zero_shot_loss']:.3f}); {res['sweep']['seeds']} seeds, mean ± std.",
        "",
        head,
        "|---|" + "---|" * len(steps),
    ]
    for lr in res["sweep"]["lrs"]:
        cells = []
        for s in steps:
            r = by[(lr, s)]
            mark = " **best**" if res["best"][str(s)] == lr else ""
            cells.append(f"{r['mean']:.3f} ± {r['std']:.3f} ({r['ppl_ratio']:.2f}x){mark}")
        lines.append(f"| {lr:g} | " + " | ".join(cells) + " |")
    rec = res["recommended"]
    lines += [
        "",
        f"Recommended: lr {rec['lr']:g}, the smallest within {rec['tol']} nats of the best at "
        f"{max(steps)} steps (`jaxprune.study.lr_sweep.recommend_lr`).",
    ]
    return "\n".join(lines) + "\n"
