"""The MiniPuzzle report: ``report.md`` (the ranked candidates and the chosen blocks),
``candidates.json``, ``choices.json`` and, with matplotlib, ``puzzle.png`` (per-block
parent vs student, and the candidates' ranking score against memory)."""

from __future__ import annotations

import json
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.puzzle.mini import MiniPuzzleResult
from jaxprune.search.search import pareto

_COLORS = {"mamba2": "tab:blue", "attention": "tab:orange", "mlp": "tab:green", "moe": "tab:red"}


def write_report(
    out: Path, result: MiniPuzzleResult, choices: dict, axes: dict, budget: str, data: dict
) -> list[Path]:
    """Write the report files into ``out``; returns their paths."""
    cands, best = result.candidates, result.best
    distilled = any(c.distilled_loss is not None for c in cands)
    rows = []
    for i, c in enumerate(cands, 1):
        t = ", ".join(f"{k}={v}" for k, v in c.targets.items())
        d = "" if c.distilled_loss is None else f"{c.distilled_loss:.4f}"
        e = c.extra
        rows.append(
            f"| {i} | {t}{' **chosen**' if c is best else ''} | {c.params:,} | "
            f"{c.memory / 1e6:,.1f} | {c.decode_ms:.2f} | {e['accuracy']:.4f} | "
            f"{e['agreement']:.4f} | {c.loss:.4f} | {d} |"
        )
    kinds = {}
    for b in choices["blocks"]:
        k = kinds.setdefault(b["kind"], [0, 0])
        k[0] += 1
        k[1] += b["kept"]
    md = [
        "# MiniPuzzle",
        "",
        f"Source: {result.source['total']:,} parameters. Budget: {budget}.",
        f"Data: `{data['data']}`, {data['rows']:,} rows x {data['seq_len']:,} tokens.",
        "",
        "Grid: "
        + "; ".join(f"{k} in {v[0]}..{v[-1]} ({len(v)})" for k, v in axes.items())
        + f": {result.grid:,} candidates, {result.feasible:,} within the budget, "
        f"{len(cands)} ranked (largest memory first).",
        "",
        "Ranked by the mean of next-token accuracy and agreement with the parent's top-1 "
        "token"
        + (
            "; the top ones then by LM loss after a short distillation." if distilled else "."
        ),  # fmt: skip
        "",
        "| rank | targets | params | memory (MB) | decode ms/token | accuracy | agreement | "
        "loss (zero-shot) | loss (distilled) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"## Chosen: {choices['params']:,} parameters, {choices['memory_bytes'] / 1e6:,.1f} MB",
        "",
        "| kind | parent blocks | kept |",
        "|---|---|---|",
        *[f"| {k} | {n} | {kept} |" for k, (n, kept) in kinds.items()],
        "",
        f"Removed blocks (by `{choices['depth_ranking']}`): "
        + (
            ", ".join(f"{b['block']} ({b['kind']})" for b in choices["blocks"] if not b["kept"])
            or "none"
        ),  # fmt: skip
    ]
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.md", out / "candidates.json", out / "choices.json"]
    atomic_write_text(paths[1], json.dumps([c.__dict__ for c in cands], indent=2))
    atomic_write_text(paths[2], json.dumps(choices, indent=2))
    png = _plot(out / "puzzle.png", result, choices)
    if png is not None:
        paths.append(png)
        md += ["", "![puzzle](puzzle.png)"]
    atomic_write_text(paths[0], "\n".join(md) + "\n")
    return paths


def _plot(path: Path, result: MiniPuzzleResult, choices: dict):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (top, right) = plt.subplots(1, 2, figsize=(14, 3.8), width_ratios=(2, 1))
    for b in choices["blocks"]:
        color = _COLORS.get(b["kind"], "tab:gray")
        top.bar(b["block"], 1.0, color=color, alpha=0.25, width=0.9)
        if b["kept"]:
            h = b["width"] / b["parent_width"] if "width" in b else 1.0
            top.bar(b["block"], h, color=color, width=0.6)
    for kind, color in _COLORS.items():
        if any(b["kind"] == kind for b in choices["blocks"]):
            top.bar([], [], color=color, label=kind)
    top.set_xlabel("block (pale: parent; solid: kept, height = FFN width / parent's)")
    top.set_ylabel("kept fraction")
    top.legend(fontsize=8, ncol=4, loc="lower right")
    cands = result.candidates
    xs = [c.memory / 1e6 for c in cands]
    ys = [c.extra["score"] for c in cands]
    front = pareto([(x, -y) for x, y in zip(xs, ys, strict=True)])
    right.scatter(xs, ys, c=["tab:red" if f else "tab:gray" for f in front], s=22)
    b = cands.index(result.best)
    right.scatter([xs[b]], [ys[b]], marker="*", s=200, c="gold", edgecolors="black", zorder=3)
    right.set_xlabel("memory (MB)")
    right.set_ylabel("(accuracy + agreement) / 2")
    right.grid(alpha=0.3)
    right.set_title("candidates (red: Pareto front, star: chosen)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
