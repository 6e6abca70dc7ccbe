"""Search report: a Markdown table and a plot of loss against params, latency and memory
with the Pareto front marked."""

from __future__ import annotations

import json
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.search.search import Candidate, pareto


def loss_label(cands: list[Candidate]) -> str:
    """What the ranking loss is: zero-shot (pruned, not trained) or after each candidate's
    short distillation."""
    if any(c.distilled_loss is not None for c in cands):
        return "LM loss, distilled (short run per candidate)"
    return "LM loss, zero-shot (pruned, no training)"


def data_lines(data: dict | None) -> list[str]:
    """Which rows the candidates were scored on, and a warning when they also calibrated
    the scores or trained the model."""
    if not data:
        return []
    out = [f"Candidates scored on: `{data['data']}` ({data['rows']:,} rows x "
           f"{data['seq_len']:,} tokens)."]  # fmt: skip
    if data.get("training_data") or data.get("calibration_data"):
        if data.get("training_data"):
            what, fix = "training", "give `eval_data` (held-out rows) to `compress`"
        else:
            what = "calibration"
            fix = "calibrate apart (`jaxprune importance`, then `search --scores`)"
        out += [
            "",
            f"**Warning: scored on the {what} data**: the losses may flatter every "
            f"candidate; to rank on held-out rows, {fix}.",
        ]
    return out


def write_report(
    out: Path, cands: list[Candidate], best: Candidate, source: dict, data: dict | None = None
) -> list[Path]:
    """Write ``report.md``, ``candidates.json`` and (with matplotlib) ``search.png``.
    ``data``: ``{"data", "rows", "seq_len", "training_data", "calibration_data"}`` of the
    rows the candidates were scored on (stated in the report)."""
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
        *data_lines(data),
        "",
        f"Ranked by: {loss_label(cands)}; Pareto: not beaten in both parameters and loss.",
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
    if len(cands) < 2:  # one point is no plot: the table says it all
        return paths
    png = _plot(out / "search.png", cands, best)
    if png is not None:
        paths.append(png)
        atomic_write_text(paths[0], "\n".join(md) + "\n\n![search](search.png)\n")
    return paths


def _plot(path: Path, cands: list[Candidate], best: Candidate):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = figure(cands, best)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure(cands: list[Candidate], best: Candidate):
    """Loss against params, decode latency and memory; on each panel its own Pareto front
    (that x and the loss, both minimized) is drawn as a red step line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    loss = [c.final_loss for c in cands]
    scale = {"params": 1e6, "decode_ms": 1.0, "memory": 1e6}
    b = cands.index(best)
    for ax, key, label in zip(
        axes,
        ("params", "decode_ms", "memory"),
        ("parameters (M)", "decode ms / token", "memory (MB)"),
        strict=True,
    ):
        xs = [getattr(c, key) / scale[key] for c in cands]
        front = pareto(list(zip(xs, loss, strict=True)))
        ax.scatter(xs, loss, c="tab:gray", s=22, label="candidate")
        fx = sorted((x, y) for x, y, f in zip(xs, loss, front, strict=True) if f)
        ax.step([x for x, _ in fx], [y for _, y in fx], where="post", color="tab:red", lw=1.2)
        ax.scatter([x for x, _ in fx], [y for _, y in fx], c="tab:red", s=30,
                   label="Pareto front")  # fmt: skip
        ax.scatter([xs[b]], [loss[b]], marker="*", s=200, c="gold", edgecolors="black",
                   zorder=3, label="chosen")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel(loss_label(cands), fontsize=9)
        ax.tick_params(labelsize=9)
        ax.ticklabel_format(axis="both", style="plain", useOffset=False)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("Search candidates (lower is better on both axes)", fontsize=11)
    fig.tight_layout()
    return fig
