"""The five findings as variants: targets chosen (equal parameter counts where asked), the
runs executed per seed, and each finding's ``reproduced`` derived by :func:`stats.reproduced`.

Expected directions (lower held-out loss wins): (a) Mamba heads over head channels and
over both, at equal parameters; (b) group-aware over group-unaware heads; (c) width over
depth at ~50% of the parameters, after distillation; (d) pruned + distilled over the same
architecture from scratch at equal tokens (and the multiple of tokens scratch needs to
catch up); (e) importance over random rankings, zero-shot and distilled.
"""

from __future__ import annotations

from jaxprune.config import Mamba2Config
from jaxprune.counts import count_params
from jaxprune.study.runs import Study, Variant
from jaxprune.study.stats import match_value, mean_std, rel_diff, reproduced

CLAIMS = {
    "a": "Mamba head pruning beats head-channel pruning and both, at equal parameters",
    "b": "group-aware Mamba head pruning beats group-unaware at the same target",
    "c": "width pruning beats depth pruning at ~50% parameters, after distillation",
    "d": "pruned + distilled beats the same architecture trained from scratch on equal tokens",
    "e": "importance-based pruning beats random pruning (same group structure)",
}


def _mamba(study: Study) -> Mamba2Config:
    return next(x for x in study.teacher_config.layers if isinstance(x, Mamba2Config))


def variants_a(study: Study) -> list[Variant]:
    """heads: half the heads; channels and both: head_dim searched to match its count."""
    m = _mamba(study)
    h, p, g = m.num_heads, m.head_dim, m.n_groups
    heads = {"mamba_num_heads": h // 2}
    ref = study.params_of(heads)
    ch = match_value(lambda d: study.params_of({"mamba_head_dim": d}), range(1, p), ref)[0]
    both_h = max(x for x in range(g, h, g) if x > h // 2) if h // 2 + g < h else h - g
    both_d = match_value(
        lambda d: study.params_of({"mamba_num_heads": both_h, "mamba_head_dim": d}),
        range(1, p),
        ref,
    )[0]
    return [
        Variant(f"heads[mamba_num_heads={h // 2}]", heads),
        Variant(f"channels[mamba_head_dim={ch}]", {"mamba_head_dim": ch}),
        Variant(
            f"both[mamba_num_heads={both_h},mamba_head_dim={both_d}]",
            {"mamba_num_heads": both_h, "mamba_head_dim": both_d},
        ),
    ]


def variants_b(study: Study) -> list[Variant]:
    t = {"mamba_num_heads": _mamba(study).num_heads // 2}
    return [
        Variant(f"{g}[mamba_num_heads={t['mamba_num_heads']}]", t, mamba_grouping=g)
        for g in ("aware", "unaware")
    ]


def width_depth(study: Study) -> tuple[Variant, Variant]:
    """depth: the layer count closest to half the teacher's parameters (whatever fraction
    that is: embeddings cannot be dropped; the count is recorded); width: half the Mamba
    heads, with hidden and MLP sizes searched (a grid) to match depth's count."""
    cfg = study.teacher_config
    half = count_params(cfg)["total"] // 2
    n = len(cfg.layers)
    layers, depth_count = match_value(
        lambda k: study.params_of({"num_hidden_layers": k}), range(1, n), half, tol=1.0
    )
    mlp = next(x.intermediate for x in cfg.layers if hasattr(x, "intermediate"))
    heads = _mamba(study).num_heads // 2

    def width(hf: tuple[int, int]) -> dict:
        return {"hidden_size": hf[0], "intermediate_size": hf[1], "mamba_num_heads": heads}

    grid = [
        (hd, f)
        for hd in range(max(4, cfg.hidden // 4), cfg.hidden)
        for f in range(max(1, mlp // 8), mlp + 1, max(1, mlp // 32))
    ]
    # the most balanced (hidden and MLP kept in about the same proportion) within 2%
    ok = [x for x in grid if rel_diff(study.params_of(width(x)), depth_count) <= 0.02]
    hd, f = min(ok, key=lambda x: abs(x[0] / cfg.hidden - x[1] / mlp)) if ok else grid[0]
    match_value(lambda x: study.params_of(width(x)), [(hd, f)], depth_count)  # 2% or raise
    return (
        Variant(f"width[hidden_size={hd},intermediate_size={f}]", width((hd, f))),
        Variant(f"depth[num_hidden_layers={layers}]", {"num_hidden_layers": layers}),
    )


def variants_e(study: Study) -> list[Variant]:
    w = width_depth(study)[0]
    return [Variant("importance", w.targets), Variant("random", w.targets, ranking="random")]


def measure(study: Study, v: Variant, *, distill: bool, decode: bool = False) -> dict:
    """Every seed's zero-shot loss (and distilled loss) of ``v``."""
    zs = [study.pruned(v, s) for s in study.cfg.seeds(False)]
    out = {
        "name": v.name,
        "ranking": v.ranking,
        "mamba_grouping": v.mamba_grouping,
        "targets": v.targets,
        "params": zs[0]["params"],
        "params_per_seed": [r["params"] for r in zs],
        "zero_shot_loss": [r["zero_shot_loss"] for r in zs],
        "distilled_loss": None,
        "decode_tok_s": study.decode(zs[0]["config"]) if decode and study.cfg.decode_new else None,
    }
    if distill:
        out["distilled_loss"] = [study.distilled(v, s)["loss"] for s in study.cfg.seeds(True)]
    return out


def verdict(variants: list[dict], better: str, others: list[str]) -> dict[str, bool | None]:
    """{basis: reproduced} for ``zero_shot_loss`` and ``distilled_loss`` (None when not
    every compared variant was distilled): ``better`` must beat each of ``others``."""
    by = {v["name"]: v for v in variants}
    out: dict[str, bool | None] = {}
    for basis in ("zero_shot_loss", "distilled_loss"):
        if all(by[n][basis] for n in [better, *others]):
            out[basis] = all(reproduced(by[better][basis], by[o][basis]) for o in others)
        else:
            out[basis] = None
    return out


def finding(fid: str, variants: list[dict], better: str, others: list[str], **extra) -> dict:
    """The record of one finding. ``reproduced``: on the distilled losses where run, else
    zero-shot; for (e) (importance should win both ways) zero-shot and distilled."""
    by = verdict(variants, better, others)
    if by["distilled_loss"] is None:
        basis, ok = "zero_shot_loss", bool(by["zero_shot_loss"])
    elif fid == "e":
        basis, ok = (
            "zero_shot_loss and distilled_loss",
            by["zero_shot_loss"] and by["distilled_loss"],
        )
    else:
        basis, ok = "distilled_loss", by["distilled_loss"]
    return {
        "id": fid,
        "claim": CLAIMS[fid],
        "expected_better": better,
        "compared_to": others,
        "basis": basis,
        "reproduced": bool(ok),
        "reproduced_by": by,
        "variants": variants,
        **extra,
    }


def scratch_curve(study: Study, distilled: dict) -> dict:
    """(d): scratch runs at growing token multiples, stopping once scratch catches up."""
    target, _ = mean_std(distilled["distilled_loss"])
    config = study.pruned(Variant(distilled["name"], distilled["targets"]), 0)["config"]
    rows, caught = [], None
    for k in study.cfg.scratch_multiples:
        runs = [study.scratch(config, k, s) for s in study.cfg.seeds(True)]
        rows.append(
            {
                "name": f"scratch-{k}x",
                "multiple": k,
                "tokens": runs[0]["tokens"],
                "params": distilled["params"],
                "targets": distilled["targets"],
                "ranking": None,
                "mamba_grouping": None,
                "zero_shot_loss": None,
                "decode_tok_s": None,
                "distilled_loss": None,
                "scratch_loss": [r["loss"] for r in runs],
            }
        )
        if mean_std(rows[-1]["scratch_loss"])[0] <= target:
            caught = k
            break
    return {"scratch": rows, "catch_up_multiple": caught}
