"""Search report: a Markdown table and a plot of loss against params, latency and memory
with the Pareto front marked."""

from __future__ import annotations

import json
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.search.search import Candidate, pareto


def write_report(out: Path, cands: list[Candidate], best: Candidate, source: dict) -> list[Path]:
    """Write ``report.md``, ``candidates.json`` and (with matplotlib) ``search.png``."""
    front = pareto([(c.params, c.final_loss) for c in cands])
    rows = []
    for c, on_front in zip(cands, front, strict=True):
        t = ", ".join(f"{k}={v}" for k, v in c.targets.items())
        d = "" if c.distilled_loss is None else f"{c.distilled_loss:.4f}"
        mark = " **best**" if c is best else ""
        rows.append(
            f"| {t}{mark} | {c.params:,} | {c.active:,} | {c.memory / 1e6:,.1f} | "
            f"{c.decode_ms:.2f} | {c.loss:.4f} | {d} | {'yes' if on_front else ''} |"
        )
    md = [
        "# Architecture search",
        "",
        f"Source: {source['total']:,} parameters ({source['active']:,} active).",
        "",
        "| targets | params | active | memory (MB) | decode ms/token | loss (zero-shot) | "
        "loss (distilled) | Pareto |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.md", out / "candidates.json"]
    atomic_write_text(paths[0], "\n".join(md) + "\n")
    atomic_write_text(
        paths[1],
        json.dumps(
            [{**c.__dict__, "pareto": f} for c, f in zip(cands, front, strict=True)], indent=2
        ),
    )
    png = _plot(out / "search.png", cands, front, best)
    if png is not None:
        paths.append(png)
        atomic_write_text(paths[0], "\n".join(md) + "\n\n![search](search.png)\n")
    return paths


def _plot(path: Path, cands: list[Candidate], front: list[bool], best: Candidate):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    loss = [c.final_loss for c in cands]
    scale = {"params": 1e6, "decode_ms": 1.0, "memory": 1e6}
    for ax, key, label in zip(
        axes,
        ("params", "decode_ms", "memory"),
        ("parameters (M)", "decode ms / token", "memory (MB)"),
        strict=True,
    ):
        xs = [getattr(c, key) / scale[key] for c in cands]
        ax.scatter(xs, loss, c=["tab:red" if f else "tab:gray" for f in front], s=18)
        b = cands.index(best)
        ax.scatter(
            [xs[b]],
            [loss[b]],
            marker="*",
            s=160,
            c="gold",
            edgecolors="tab:red" if front[b] else "black",
        )
        ax.set_xlabel(label)
        ax.set_ylabel("LM loss")
    axes[0].set_title("red: Pareto front (params, loss); star: chosen")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
