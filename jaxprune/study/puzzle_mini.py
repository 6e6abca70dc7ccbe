"""The miniature Puzzle experiment (issue 17, item 6), on the ablation study's teacher and
data: at each compression (0.4 and 0.6: the student keeps 60% and 40% of the parameters),
full-mode Puzzle (per-block variants, blockwise local distillation, the MIP, the top few
ranked on held-apart calibration rows) against the uniform Minitron search at the same
parameter budget (one width per axis plus depth, ranked zero-shot), both then distilled
from the teacher for the same number of tokens. Held-out losses before and after
distillation, parameter counts and the chosen architectures go to ``OUT/puzzle_mini.json``
and ``OUT/PUZZLE.md`` with a figure. Every run is cached like the study's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.config import ModelConfig
from jaxprune.converters.native import load_native, save_native
from jaxprune.counts import count_params
from jaxprune.pruning.materialize import shrink_config
from jaxprune.pruning.prune import plan, prune
from jaxprune.puzzle.full import PuzzleConfig, choices, run_puzzle
from jaxprune.puzzle.library import build_library, student_config
from jaxprune.search.run import run_search
from jaxprune.search.search import Budget
from jaxprune.search.space import SearchSpace
from jaxprune.small_lm import small_train_config
from jaxprune.study.config import StudyConfig
from jaxprune.study.run import machine_info, open_study
from jaxprune.study.runs import train_resumable

_SCORE_SEED, _RANK_SEED = 100, 101  # calibration subsets of the training part
# the uniform search's axes: the block widths and depth. Neither method prunes the
# embedding width, so a compression is a fraction of the blocks' parameters.
_UNIFORM_AXES = ("intermediate_size", "mamba_num_heads", "num_attention_heads",
                 "moe_intermediate_size", "num_hidden_layers")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PuzzleMiniConfig:
    """The experiment's settings (distillation steps: the study's, unless given)."""

    compressions: tuple[float, ...] = (0.4, 0.6)
    bld_steps: int = 100
    bld_lr: float = 1e-3
    top_k: int = 3
    score_samples: int = 32
    rank_samples: int = 32
    divisor: int = 8
    max_prune: float = 0.7
    distill_steps: int | None = None


def budget(cfg, compression: float) -> int:
    """Embeddings + (1 - compression) x the blocks' parameters."""
    c = count_params(cfg)
    blocks = c["total"] - c["embedding"]
    return int(c["embedding"] + round((1 - compression) * blocks))


def _puzzle_cfg(mini: PuzzleMiniConfig, keep: int, seq_len: int) -> PuzzleConfig:
    return PuzzleConfig(
        params=float(keep), ffn_divisor=mini.divisor, memory_context=seq_len,
        bld_steps=mini.bld_steps, bld_lr=mini.bld_lr, top_k=mini.top_k,
        score_samples=mini.score_samples, eval_samples=mini.rank_samples,
    )  # fmt: skip


def arch_config(study, mini: PuzzleMiniConfig, kind: str, keep: int, record: dict) -> ModelConfig:
    """The student architecture of a (cached) ``record``, rebuilt from the teacher's config
    and calibration scores alone (no weights): Puzzle's chosen variants or the uniform
    search's targets."""
    cfg, scores = study.teacher_config, study.scores(0).scores
    if kind == "puzzle":
        lib = build_library(cfg, scores, _puzzle_cfg(mini, keep, study.cfg.seq_len).library())
        chosen = [next(v for v in row if v.name == name)
                  for row, name in zip(lib, record["variants"], strict=True)]  # fmt: skip
        out = student_config(cfg, scores, chosen)
    else:
        out = shrink_config(cfg, plan(cfg, scores, record["targets"], "depth_block_influence"))
    if count_params(out)["total"] != record["params"]:
        raise RuntimeError(f"puzzle_mini: rebuilt {kind} architecture does not match its record")
    return out


def _tok_s(study, config: ModelConfig) -> float | None:
    """Greedy decode tokens/s of the architecture (None where the size measures none)."""
    return study.decode(config.to_dict()) if study.cfg.decode_new else None


def _fmt_tps(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def run_puzzle_mini(
    cfg: StudyConfig,
    mini: PuzzleMiniConfig,
    out: Path,
    *,
    teacher: str | None = None,
    data: str | None = None,
    command: str = "",
) -> dict:
    out = Path(out)
    study, tinfo = open_study(cfg, out, teacher=teacher, data=data)
    full = count_params(study.teacher_config)["total"]
    steps = mini.distill_steps or cfg.distill_steps
    rows = study.split.calib_rows(cfg.seq_len, mini.score_samples, _SCORE_SEED)
    rank_rows = study.split.calib_rows(cfg.seq_len, mini.rank_samples, _RANK_SEED)
    base = {"teacher": study.teacher_key, "data": study.data_key, "mini": dataclasses.asdict(mini)}

    def arch(kind: str, keep: int, need_student: bool = False) -> tuple[dict, Path]:
        inputs = {**base, "keep": keep}

        def compute(d: Path) -> dict:
            t0 = time.perf_counter()
            teacher_m, scores = study.teacher, study.scores(0).scores
            if kind == "puzzle":
                res = run_puzzle(teacher_m, scores, rows, rank_rows,
                                 _puzzle_cfg(mini, keep, cfg.seq_len), cache_dir=d / "cache",
                                 batch_size=8)  # fmt: skip
                student = res.student
                picked = choices(study.teacher_config, res)
                record = {"variants": [b["variant"] for b in picked["blocks"]],
                          "block_params": [b["params"] for b in picked["blocks"]],
                          "parent_block_params": [b["parent_params"] for b in picked["blocks"]],
                          "solutions": len(res.solutions)}  # fmt: skip
            else:
                space = SearchSpace(axes=_UNIFORM_AXES, max_prune=mini.max_prune,
                                    divisor=mini.divisor)  # fmt: skip
                res = run_search(teacher_m, scores, rank_rows, Budget(params=float(keep)), space,
                                 2 * mini.top_k, batch_size=8)  # fmt: skip
                student = prune(teacher_m, scores, res.best.targets, "depth_block_influence")
                record = {"targets": res.best.targets}
            save_native(d / "student", student)
            record["params"] = count_params(student.config)["total"]
            record["zero_shot_loss"] = study.loss(student)
            return {**record, "wall_s": time.perf_counter() - t0}

        need = ("student",) if need_student else ()
        r = study.cache.get(f"puzzle_{kind}", inputs, compute, need=need)
        return r, study.cache.dir(f"puzzle_{kind}", inputs) / "student"

    def distilled(kind: str, keep: int) -> dict:
        inputs = {**base, "keep": keep, "kind": kind, "steps": steps, "lr": cfg.lr}

        def compute(d: Path) -> dict:
            t0 = time.perf_counter()
            tc = small_train_config(steps, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                                    lr=cfg.lr, seed=0, distill=True)  # fmt: skip
            student_dir = arch(kind, keep, need_student=True)[1]
            model = train_resumable(tc, load_native(student_dir)[0], study.split, d / "run",
                                    study.teacher)  # fmt: skip
            return {"loss": study.loss(model), "wall_s": time.perf_counter() - t0}

        return study.cache.get("puzzle_distill", inputs, compute)

    rows_out = []
    for c in mini.compressions:
        keep = budget(study.teacher_config, c)
        for kind in ("puzzle", "uniform"):
            a = arch(kind, keep)[0]
            d = distilled(kind, keep)
            tok_s = _tok_s(study, arch_config(study, mini, kind, keep, a))
            row = {"compression": c, "kind": kind, "budget": keep, **a, "decode_tok_s": tok_s}
            rows_out.append({**row, "distilled_loss": d["loss"], "distill_wall_s": d["wall_s"]})
    res = {
        "command": command,
        "study_size": cfg.size,
        "mini": dataclasses.asdict(mini),
        "distill_tokens": steps * cfg.batch_size * cfg.seq_len,
        "decode_new": cfg.decode_new,
        "teacher": {
            "params": full,
            "loss": study.teacher_loss(),
            "pattern": study.teacher_config.pattern,
            "decode_tok_s": _tok_s(study, study.teacher_config),
            **tinfo,
        },  # fmt: skip
        "rows": rows_out,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "computed_this_run": list(study.cache.computed),
    }
    atomic_write_text(out / "puzzle_mini.json", json.dumps(res, indent=1))
    _figure(out / "puzzle_arch.png", res)
    atomic_write_text(out / "PUZZLE.md", render(res))
    return res


def _figure(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    het = [r for r in res["rows"] if r["kind"] == "puzzle"]
    pattern = res["teacher"]["pattern"]
    fig, ax = plt.subplots(figsize=(max(6, len(pattern) * 0.55), 3.2))
    width = 0.8 / max(1, len(het))
    for k, r in enumerate(het):
        frac = np.array(r["block_params"]) / np.maximum(1, np.array(r["parent_block_params"]))
        ax.bar(np.arange(len(pattern)) + k * width, frac, width,
               label=f"{r['compression']:.0%} compression ({r['params']:,} params)")  # fmt: skip
    ax.set_xticks(np.arange(len(pattern)) + 0.4 - width / 2, list(pattern))
    ax.set_ylabel("params kept per block")
    ax.set_xlabel("block (M Mamba2, * attention, - MLP); 0 = removed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(res: dict) -> str:
    t = res["teacher"]
    lines = [
        "# Puzzle (heterogeneous) vs uniform Minitron search, miniature",
        "",
        f"`{res['command']}`, {res['date']}, {res['machine']['platform']}, "
        f"{res['machine']['cpus']} CPUs.",
        "",
        f"Teacher: `{t['pattern']}`, {t['params']:,} parameters, held-out loss {t['loss']:.3f}, "
        f"{_fmt_tps(t['decode_tok_s'])} decode tokens/s. "
        f"Each student is distilled from it for {res['distill_tokens']:,} tokens (one seed). "
        "Puzzle: per-block variants, "
        f"{res['mini']['bld_steps']} BLD steps, MIP top {res['mini']['top_k']} ranked on "
        "held-apart calibration rows. Uniform: the Minitron search (one width per axis plus "
        "depth) at the same parameter budget, best zero-shot candidate. Neither prunes the "
        "embedding width: a compression is the fraction of the blocks' parameters removed. "
        f"Decode: greedy tokens/s, batch 1, {res['decode_new']} new tokens after a 16-token "
        "prompt, on this machine's CPUs (the study's `decode` runs).",
        "",
        "| compression | method | params | zero-shot loss | distilled loss | decode tok/s "
        "| architecture |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        if r["kind"] == "puzzle":
            what = " ".join(r["variants"])
        else:
            what = ", ".join(f"{k}={v}" for k, v in r["targets"].items())
        lines.append(
            f"| {r['compression']:.0%} | {r['kind']} | {r['params']:,} | "
            f"{r['zero_shot_loss']:.3f} | {r['distilled_loss']:.3f} | "
            f"{_fmt_tps(r['decode_tok_s'])} | {what} |"
        )
    lines += ["", "![Puzzle's per-block choices](puzzle_arch.png)", ""]
    return "\n".join(lines)
