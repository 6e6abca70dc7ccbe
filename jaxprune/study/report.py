"""``OUT/STUDY.md`` and its plots (matplotlib, Agg): a table of mean ± std per variant with
each finding's verdict, bars with error bars (from 0) for (a), (b), (c), (e), loss against
tokens for (d), and the importance scores of every block as heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprune.atomic import atomic_write_text
from jaxprune.study.stats import mean_std

LOSSES = ("zero_shot_loss", "distilled_loss", "scratch_loss")


def _fmt(values) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:.3f} ± {s:.3f} (n={len(values)})"


def table(results: dict) -> str:
    lines = [
        "| finding | variant | params | zero-shot loss | distilled loss | scratch loss "
        "| decode tok/s | reproduced |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fid, f in results["findings"].items():
        for i, v in enumerate(f["variants"]):
            tps = f"{v['decode_tok_s']:,.0f}" if v.get("decode_tok_s") else "-"
            verdict = ("yes" if f["reproduced"] else "no") if i == 0 else ""
            lines.append(
                f"| ({fid}) | {v['name']} | {v['params']:,} | {_fmt(v.get('zero_shot_loss'))} "
                f"| {_fmt(v.get('distilled_loss'))} | {_fmt(v.get('scratch_loss'))} | {tps} "
                f"| {verdict} |"
            )
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars(path: Path, f: dict) -> None:
    """Grouped bars (zero-shot, distilled) with ± std error bars; the y axis starts at 0."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [v["name"] for v in f["variants"]]
    x = np.arange(len(names))
    for j, key in enumerate(("zero_shot_loss", "distilled_loss")):
        stats = [mean_std(v[key]) if v.get(key) else (np.nan, 0.0) for v in f["variants"]]
        bars = ax.bar(
            x + (j - 0.5) * 0.38,
            [m for m, _ in stats],
            0.38,
            yerr=[s for _, s in stats],
            capsize=3,
            label=key.replace("_", " "),
        )
        ax.bar_label(bars, fmt="%.3f", fontsize=6)  # bars start at 0: the means as text
    ax.set_xticks(x, names, rotation=12, fontsize=7)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("held-out loss (nats)")
    ax.set_title(f"({f['id']}) {f['claim']}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve(path: Path, f: dict) -> None:
    """(d): scratch loss against tokens (± std) and the distilled student's loss."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    base, rows = f["variants"][0], f["variants"][1:]
    if rows:
        st = [mean_std(r["scratch_loss"]) for r in rows]
        ax.errorbar(
            [r["tokens"] for r in rows],
            [m for m, _ in st],
            yerr=[s for _, s in st],
            marker="o",
            capsize=3,
            label="same architecture, from scratch",
        )
        ax.set_xscale("log", base=2)
    if base.get("distilled_loss"):
        m, s = mean_std(base["distilled_loss"])
        tok = rows[0]["tokens"] if rows else 1
        ax.errorbar(
            [tok],
            [m],
            yerr=[s],
            marker="*",
            ms=12,
            color="C3",
            capsize=3,
            label="pruned + distilled",
        )
        ax.axhline(m, color="C3", lw=0.8, ls="--")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out loss (nats)")
    ax.set_title("(d) loss against tokens", fontsize=8)
    if rows or base.get("distilled_loss"):
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "not run (--zero-shot-only)", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmaps(path: Path, scores: dict, cfg) -> None:
    """One heatmap per block's importance (Mamba: heads x channels; others: one row)."""
    plt = _plt()
    keys = [
        k
        for k in scores
        if k.startswith("blocks.")
        and np.ndim(scores[k]) >= 1
        and k.split(".")[-1] in ("mamba", "heads", "mlp", "experts")
    ]
    keys.append("hidden")
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.1 * len(keys) + 0.6), squeeze=False)
    for ax, k in zip(axes[:, 0], keys):
        a = np.asarray(scores[k], np.float64)
        a = a.reshape(1, -1) if a.ndim == 1 else a.reshape(a.shape[0], -1)
        im = ax.imshow(a, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(k, fontsize=7)
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.02)
    fig.suptitle(f"importance (seed-0 calibration) of {cfg.pattern}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out: Path, results: dict, scores, cfg) -> Path:
    """Write the plots and ``out/STUDY.md``."""
    plots = []
    for fid, f in results["findings"].items():
        p = out / f"plot_{fid}.png"
        (curve if fid == "d" else bars)(p, f)
        plots.append(p.name)
    heatmaps(out / "heatmaps.png", scores.scores, cfg)
    r = results
    head = [
        "# The ablation study",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Date: {r['date']}; machine: {r['machine']['platform']}, {r['machine']['cpus']} CPUs, "
        f"JAX {r['machine']['jax']} on {r['machine']['jax_backend']}.",
        "",
        f"Seeds: zero-shot {r['seeds']['zero_shot']}, distillation {r['seeds']['distill']} "
        "(seed = calibration subset and data order; random rankings use it too).",
        "",
        f"Teacher: {r['teacher']['pattern']}, {r['teacher']['params']:,} parameters, held-out "
        f"loss {r['teacher']['loss']:.3f}. Data: {r['data']['source']}, "
        f"{r['data']['train_tokens']:,} training / {r['data']['held_out_tokens']:,} held-out "
        "tokens (never trained or calibrated on).",
        "",
        "Reproduced: the expected-better variant's mean is lower by more than twice the larger "
        "standard deviation (n = 1: strictly lower mean); on distilled losses where run.",
        "",
    ]
    verdicts = [
        f"- ({k}) {f['claim']}: **{'reproduced' if f['reproduced'] else 'not reproduced'}"
        f"** (basis: {f['basis']})"
        for k, f in r["findings"].items()
    ]
    d = r["findings"]["d"]
    if d["basis"] != "not run":
        caught = d.get("catch_up_multiple")
        verdicts.append(
            f"- (d) scratch catches up at {caught}x the distillation tokens"
            if caught
            else f"- (d) scratch did not catch up within {d['variants'][-1]['name']}"
        )
    body = [
        table(r),
        "",
        *verdicts,
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        "![importance heatmaps](heatmaps.png)",
        "",
    ]
    return atomic_write_text(out / "STUDY.md", "\n".join(head + body))
