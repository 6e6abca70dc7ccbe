"""The ``compress`` report: ``report.md`` lines and ``report.png``, saying what the losses
were measured on (and warning when that is the training data)."""

from __future__ import annotations

from pathlib import Path

TRAINING_DATA_WARNING = (
    "**Warning: evaluated on the training data** (no separate eval data given): the "
    "distilled loss is measured on tokens it was trained on, so it flatters the student. "
    "Give held-out data (`eval_data`, `--eval-data`) for a fair comparison."
)


def eval_note(ev: dict | None) -> str:
    """``Eval data: `PATH` (8 rows x 16 tokens).``"""
    if not ev:
        return "Eval data: unknown."
    return f"Eval data: `{ev['data']}` ({ev['rows']:,} rows x {ev['seq_len']:,} tokens)."


def report_lines(summary: dict) -> list[str]:
    """The Markdown of ``report.md`` (without the plot and search links)."""
    ev = summary.get("eval")
    lines = ["# Compression report", "", f"Targets: `{summary['targets']}`", "", eval_note(ev)]
    if ev and ev.get("training_data"):
        lines += ["", TRAINING_DATA_WARNING]
    rows = summary["rows"]
    base = next((r for r in rows if r["model"] == "teacher"), None)
    lines += [
        "",
        "| model | params | active | eval loss | ppl | ppl vs teacher |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['ppl'] / base['ppl']:.3f}x" if base else "-"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['active']:,} | {r['loss']:.4f} | "
            f"{r['ppl']:.2f} | {ratio} |"
        )
    kv = summary.get("kv_compression")
    if kv:
        per = ", ".join(f"block {i} {b['ratio']:.2f}x" for i, b in kv["blocks"].items())
        lines += ["", f"DMC KV-cache compression on the eval data: {kv['ratio']:.2f} tokens "
                  f"per cache slot ({per})."]  # fmt: skip
    if "export" in summary:
        lines += ["", f"HF export: {summary['export']}"]
    return lines


def loss_limits(losses: list[float]) -> tuple[float, float]:
    """y-limits that show the differences: from 0 when the spread is a large part of the
    values, else zoomed around them (the caller marks an axis that does not start at 0)."""
    lo, hi = min(losses), max(losses)
    spread = hi - lo
    if lo <= 0 or spread > 0.5 * hi:
        return 0.0, hi * 1.15
    pad = max(spread * 0.6, 0.02 * hi)
    return max(lo - pad, 0.0), hi + pad


def plot(path: Path, summary: dict) -> bool:
    """Save :func:`figure` to ``path`` (skipped without matplotlib: returns False)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = figure(summary)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure(summary: dict):
    """Eval loss and parameters per stage, values written on the bars; a loss axis that
    does not start at 0 says so; the title names the eval data and warns when it is the
    training data."""
    import matplotlib.pyplot as plt

    rows, ev = summary["rows"], summary.get("eval") or {}
    names = [r["model"] for r in rows]
    losses = [r["loss"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    bars = a.bar(names, losses, color="tab:blue")
    a.bar_label(bars, labels=[f"{v:.4f}" for v in losses], fontsize=9)
    lo, hi = loss_limits(losses)
    a.set_ylim(lo, hi)
    label = "eval loss (nats)"
    if lo > 0:
        label += f"\naxis starts at {lo:.3g}, not 0"
    a.set_ylabel(label)
    where = Path(str(ev.get("data", "?"))).name
    title = f"on {where} ({ev.get('rows', '?')} rows)"
    if ev.get("training_data"):
        title += "\nWARNING: the training data"
    a.set_title(title, fontsize=10, color="tab:red" if ev.get("training_data") else "black")
    params = [r["params"] / 1e6 for r in rows]
    pb = b.bar(names, params, color="tab:gray")
    b.bar_label(pb, labels=[f"{v:,.3g}M" for v in params], fontsize=9)
    b.set_ylim(0, max(params) * 1.15)
    b.set_ylabel("parameters (M)")
    b.set_title("parameters (axis from 0)", fontsize=10)
    for ax in (a, b):
        ax.tick_params(labelsize=10)
    fig.tight_layout()
    return fig
