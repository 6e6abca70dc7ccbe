"""Benchmark reports: a Markdown table and a plot (when matplotlib is importable)."""

from __future__ import annotations

from pathlib import Path

from jaxprune.atomic import atomic_write_text

_COLUMNS = (
    ("model", "model", None),
    ("prompt_len", "prompt", None),
    ("batch", "batch", None),
    ("params", "params (M)", 1e6),
    ("prefill_tok_s", "prefill tok/s", 1.0),
    ("decode_tok_s", "decode tok/s", 1.0),
    ("ttft_s", "TTFT (ms)", 1e-3),
    ("kv_bytes_per_seq", "KV MiB/seq", 2**20),
    ("kv_used_bytes_per_seq", "KV used MiB/seq", 2**20),
    ("ssm_bytes_per_seq", "SSM+conv MiB/seq", 2**20),
    ("peak_bytes", "peak MiB", 2**20),
)
_RATIOS = (("decode_tok_s_ratio", "decode x"), ("cache_bytes_per_seq_ratio", "cache x"))


def _fmt(value, scale) -> str:
    if value is None:
        return "-"
    if scale is None:
        return str(value)
    v = value / scale
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def to_markdown(report: dict) -> str:
    """A Markdown table with one line per (model, prompt length, batch) row of ``report``
    (from ``bench.run_bench``); ratios are against the first model."""
    head = [h for _, h, _ in _COLUMNS] + [h for _, h in _RATIOS]
    base = baseline(report)
    lines = [
        f"device: {report['device']} ({report['backend']})",
        "",
        f"baseline: {base} (the first model; the x columns are each row over {base}'s row "
        "at the same prompt length and batch)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    for r in report["rows"]:
        cells = [_fmt(r.get(k), s) for k, _, s in _COLUMNS]
        cells += [_fmt(r.get(k), 1.0) for k, _ in _RATIOS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += dmc_lines(report["rows"])
    return "\n".join(lines) + "\n"


def dmc_lines(rows: list[dict]) -> list[str]:
    """Per DMC row: the KV compression (tokens per used slot) per block and KV head."""
    out = []
    for r in rows:
        kv = r.get("kv_compression")
        if not kv:
            continue
        if not out:
            out += ["", "DMC KV compression (tokens per used cache slot), per block: heads"]
        per = "; ".join(
            f"block {i} {b['ratio']:.2f}x ({', '.join(f'{h:.2f}' for h in b['heads'])})"
            for i, b in kv["blocks"].items()
        )
        out.append(
            f"- {r['model']} prompt {r['prompt_len']} batch {r['batch']}: "
            f"{kv['ratio']:.2f}x overall; {per}"
        )
    return out


def baseline(report: dict) -> str:
    """The model the ratios are against: the first one."""
    return report["rows"][0]["model"] if report["rows"] else "-"


def plot(report: dict, path: str | Path) -> str | None:
    """Save decode throughput and cache bytes per sequence against prompt length, one line
    per (model, batch), to ``path``. Returns None, or a note when there is nothing to plot
    (a single prompt length: the table is the report) or matplotlib is missing."""
    if len({r["prompt_len"] for r in report["rows"]}) < 2:
        return "one prompt length: no plot (a line needs two points); see bench.md"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: plot skipped"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    base = baseline(report)
    series: dict[tuple[str, int], list[dict]] = {}
    for r in report["rows"]:
        series.setdefault((r["model"], r["batch"]), []).append(r)
    for (model, batch), rows in series.items():
        rows = sorted(rows, key=lambda r: r["prompt_len"])
        xs = [r["prompt_len"] for r in rows]
        label = f"{model} (batch {batch}){' [baseline]' if model == base else ''}"
        style = {"lw": 2.5} if model == base else {}
        axes[0].plot(xs, [r["decode_tok_s"] or 0 for r in rows], marker="o", label=label, **style)
        axes[1].plot(xs, [r["cache_bytes_per_seq"] / 2**20 for r in rows], marker="o")
    axes[0].set(xlabel="prompt length", ylabel="decode tokens/s", title="decode throughput")
    axes[1].set(xlabel="prompt length", ylabel="MiB per sequence", title="cache size")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(sorted({r["prompt_len"] for r in report["rows"]}))
        ax.tick_params(labelsize=9)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"{report['device']} ({report['backend']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write_report(report: dict, out_dir: str | Path) -> list[str]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``; returns the
    written paths, plus a note when the plot was skipped."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "bench.md", to_markdown(report))
    written = [str(out / "bench.json"), str(out / "bench.md")]
    png = out / "bench.png"
    note = plot(report, png)
    if note and png.exists():  # a stale plot of an earlier run would contradict the table
        png.unlink()
    written.append(note if note else str(png))
    return written
