"""The full-mode Puzzle report: ``report.md`` (per block the chosen variant and its score,
the MIP's top solutions ranked), ``solutions.json``, ``choices.json``, ``library.json`` and,
with matplotlib, ``puzzle.png`` (per-block size, parent vs student; the solutions'
parameters against their ranking loss, with the Pareto front)."""

from __future__ import annotations

import json
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.puzzle.full import PuzzleResult
from jaxprune.search.search import pareto

_COLORS = {"mamba2": "tab:blue", "attention": "tab:orange", "mlp": "tab:green", "moe": "tab:red"}


def _cost(costs: dict) -> str:
    parts = [f"{costs['params']:,.0f} params", f"{costs['memory'] / 1e6:,.1f} MB"]
    if "latency" in costs:
        parts.append(f"{costs['latency']:.3f} ms")
    return ", ".join(parts)


def write_full_report(
    out: Path, result: PuzzleResult, choices: dict, *, parent_params: int, budget: str,
    data: dict, distilled: bool, bld_steps: int,
) -> list[Path]:  # fmt: skip
    """Write the report files into ``out``; returns their paths (``report.md`` last)."""
    out.mkdir(parents=True, exist_ok=True)
    sols = result.solutions
    key = "distilled loss" if distilled else "held-out KL to the parent"
    rows = []
    for n, s in enumerate(sols, 1):
        d = f"{s['distilled_loss']:.4f}" if distilled else ""
        rows.append(
            f"| {n}{' **chosen**' if s['chosen'] else ''} | {s['objective']:.4g} | "
            f"{_cost(s['costs'])} | {s['kl']:.4g} | {s['loss']:.4f} | {s['accuracy']:.4f} | "
            f"{s['agreement']:.4f} | {d} |"
        )
    blocks = []
    for b in choices["blocks"]:
        blocks.append(
            f"| {b['block']} | {b['kind']} | {b['variant']} | {b['score']:.4g} | "
            f"{b['params']:,} / {b['parent_params']:,} | {len(result.library[b['block']])} |"
            + (_bld(b["bld_error"]) if bld_steps else "")
        )
    bld_head = " BLD local error (before -> after) |" if bld_steps else ""
    scoring = (
        f"scored by replace-one-block damage after {bld_steps} steps of blockwise local "
        "distillation" if bld_steps else "scored zero-shot by replace-one-block damage"
    )  # fmt: skip
    md = [
        "# Puzzle (full mode)",
        "",
        f"Source: {parent_params:,} parameters. Budget: {budget}.",
        f"Data: `{data['data']}`, {data['rows']:,} scoring rows and {data['eval_rows']:,} "
        f"held-out ranking rows x {data['seq_len']:,} tokens.",
        "",
        f"Library: {sum(len(r) for r in result.library)} variants over "
        f"{len(result.library)} blocks, {scoring}; one variant per block chosen by a MIP "
        f"(HiGHS); its top {len(sols)} solutions ranked by {key}.",
        "",
        "| solution | summed score | costs | KL to parent | held-out loss | accuracy | "
        "agreement | distilled loss |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"## Chosen: {_cost(result.best['costs'])}",
        "",
        "| block | kind | variant | score | params (student / parent) | variants |" + bld_head,
        "|---|---|---|---|---|---|" + ("---|" if bld_steps else ""),
        *blocks,
    ]
    paths = [out / "solutions.json", out / "choices.json", out / "library.json"]
    atomic_write_text(paths[0], json.dumps(sols, indent=2))
    atomic_write_text(paths[1], json.dumps(choices, indent=2))
    library = [[{**v.record(), "score": float(s)} for v, s in zip(row, sc, strict=True)]
               for row, sc in zip(result.library, result.scores, strict=True)]  # fmt: skip
    atomic_write_text(paths[2], json.dumps(library, indent=1))
    png = _plot(out / "puzzle.png", result, choices, distilled)
    if png is not None:
        paths.append(png)
        md += ["", "![puzzle](puzzle.png)"]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    return [*paths, out / "report.md"]


def _bld(err) -> str:
    return " |" if err is None else f" {err[0]:.3g} -> {err[1]:.3g} |"


def _plot(path: Path, result: PuzzleResult, choices: dict, distilled: bool):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 3.8), width_ratios=(2, 1))
    for b in choices["blocks"]:
        color = _COLORS.get(b["kind"], "tab:gray")
        left.bar(b["block"], 1.0, color=color, alpha=0.25, width=0.9)
        if not b["removed"]:
            left.bar(b["block"], b["params"] / max(b["parent_params"], 1), color=color, width=0.6)
        else:
            left.text(b["block"], 0.02, "x", ha="center", fontsize=9)
    for kind, color in _COLORS.items():
        if any(b["kind"] == kind for b in choices["blocks"]):
            left.bar([], [], color=color, label=kind)
    left.set_xlabel("block (pale: parent; solid: student, height = params / parent's; x: removed)")
    left.set_ylabel("kept fraction of params")
    left.legend(fontsize=8, ncol=4, loc="lower right")
    key = "distilled_loss" if distilled else "kl"
    xs = [s["costs"]["params"] / 1e6 for s in result.solutions]
    ys = [s[key] for s in result.solutions]
    front = pareto([(x, y) for x, y in zip(xs, ys, strict=True)])
    right.scatter(xs, ys, c=["tab:red" if f else "tab:gray" for f in front], s=22)
    b = next(i for i, s in enumerate(result.solutions) if s["chosen"])
    right.scatter([xs[b]], [ys[b]], marker="*", s=200, c="gold", edgecolors="black", zorder=3)
    right.set_xlabel("parameters (M)")
    right.set_ylabel("distilled loss" if distilled else "held-out KL to the parent")
    right.grid(alpha=0.3)
    right.set_title("MIP solutions (red: Pareto front, star: chosen)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
