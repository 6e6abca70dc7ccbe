"""``jaxprune importance``, ``prune`` and ``search``: thin commands over
:func:`jaxprune.pruning.scoring.score_model`, :func:`jaxprune.pruning.prune.prune` and
:func:`jaxprune.search.run.run_search`; their calibration and search flags are generated
from :class:`ScoreConfig` and :class:`SearchConfig`.

The ablation switches are ScoreConfig fields too (:mod:`jaxprune.pruning.ranking`):
``--ranking random --seed N`` prunes by random rankings with the same group structure
(``importance`` writes them to the scores file; ``prune`` / ``search`` apply them to
``--scores`` as well), and ``--mamba-grouping unaware`` ranks Mamba heads across their B/C
groups when pruning (``prune``, ``search``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxprune.cli.flags import add_dataclass_args, dataclass_from_args
from jaxprune.errors import UserError
from jaxprune.pruning.scoring import ScoreConfig
from jaxprune.search.budget import describe
from jaxprune.search.run import SearchConfig


def _rows(loaded, data: str, seq_len: int, max_rows: int, label: str = "data"):
    from jaxprune.data import load_rows
    from jaxprune.data.rows import labelled
    from jaxprune.evaluation import check_rows

    with labelled(label):
        rows = load_rows(data, seq_len=seq_len, tokenizer=loaded.tokenizer, max_rows=max_rows)
        return check_rows(rows, loaded.config.vocab_size)


def save_like(loaded, path, model) -> None:
    """Save ``model`` (pruned from ``loaded``) as a native checkpoint with ``loaded``'s
    family, HF config and auxiliary files (tokenizer)."""
    from jaxprune.converters.native import save_native

    save_native(
        path, model, family=loaded.family, hf_config=loaded.hf_config, aux_dir=loaded.source
    )


def _score(loaded, args: argparse.Namespace):
    from jaxprune.pruning.scoring import score_with

    cfg = dataclass_from_args(ScoreConfig, args)
    rows = _rows(loaded, args.data, cfg.seq_len, cfg.samples, label="calibration data")
    meta = {"model": str(args.model), "data": str(args.data)}
    return score_with(loaded.model, rows, cfg, progress=True, meta=meta)


def _scores(loaded, args: argparse.Namespace):
    """Scores from ``--scores FILE`` (ranked as ``--ranking`` says) or, with ``--data``,
    calibrated now."""
    from jaxprune.pruning.scoring import Scores, with_ranking

    if args.scores:
        _scores_file(args.scores)
        cfg = dataclass_from_args(ScoreConfig, args)
        return with_ranking(Scores.load(args.scores, loaded.config), cfg)
    return _score(loaded, args)


def _switches(args: argparse.Namespace) -> ScoreConfig:
    """The checked ScoreConfig of a pruning command; says which ablation switch is on."""
    cfg = dataclass_from_args(ScoreConfig, args)
    if cfg.ranking != "importance" or cfg.mamba_grouping != "aware":
        print(
            f"ranking: {cfg.ranking}"
            + (f" (seed {cfg.seed})" if cfg.ranking == "random" else "")
            + f"; mamba grouping: {cfg.mamba_grouping}",
            file=sys.stderr,
        )
    return cfg


def _scores_file(path: str) -> None:
    """``--scores`` must be an ``.npz`` written by ``jaxprune importance``."""
    import zipfile

    p = Path(path)
    if p.is_file() and not zipfile.is_zipfile(p):
        raise UserError(f"--scores {path}: not a scores file (.npz from `jaxprune importance`)")


def cmd_importance(args: argparse.Namespace) -> int:
    from jaxprune.models import resolve_model

    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a directory; give a file name such as scores.npz")
    if dataclass_from_args(ScoreConfig, args).mamba_grouping != "aware":
        raise UserError(
            "--mamba-grouping applies when pruning (scores do not depend on it); "
            "pass it to `jaxprune prune` or `search`"
        )
    loaded = resolve_model(args.model, tokenizer=args.tokenizer)
    sc = _score(loaded, args)
    path = sc.save(args.out, loaded.config)
    print(
        f"wrote scores for {sc.meta['samples']} calibration samples x {sc.meta['seq_len']} "
        f"tokens to {path}"
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from jaxprune.counts import count_params
    from jaxprune.models import resolve_model
    from jaxprune.pruning.prune import prune
    from jaxprune.pruning.targets import KIND_COUNTS, parse_targets, validate_targets

    if bool(args.scores) == bool(args.data):
        raise UserError("give exactly one of --scores or --data")
    switches = _switches(args)
    targets = parse_targets(args.target)
    loaded = resolve_model(args.model, tokenizer=args.tokenizer)
    model = loaded.model
    validate_targets(model.config, targets)
    sc = _scores(loaded, args)
    depth = "depth_block_influence"
    if "num_hidden_layers" in targets or any(k in targets for k in KIND_COUNTS):
        depth = sc.depth(args.depth_method)
    small = prune(model, sc.scores, targets, depth, switches.mamba_grouping)
    save_like(loaded, args.out, small)
    before, after = count_params(model.config), count_params(small.config)
    print(f"{'params':<12}{'before':>16}{'after':>16}{'ratio':>8}")
    for k in before:
        a = after.get(k, 0)
        print(f"{k:<12}{before[k]:>16,}{a:>16,}{a / before[k]:>8.2f}")
    print(f"pattern {model.config.pattern} -> {small.config.pattern}; wrote {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from jaxprune.atomic import atomic_output_dir
    from jaxprune.models import resolve_model
    from jaxprune.pruning.prune import prune
    from jaxprune.search.run import search_with
    from jaxprune.search.search import check_budget

    loaded = resolve_model(args.model, tokenizer=args.tokenizer)
    model = loaded.model
    search = dataclass_from_args(SearchConfig, args)
    switches = _switches(args)
    check_budget(model.config, search.budget)  # before calibrating
    sc = _scores(loaded, args)
    depth = sc.depth(args.depth_method)
    rows = _rows(loaded, args.data, args.seq_len, max(search.eval_samples, 1))
    data = {
        "data": args.data,
        "rows": int(rows.shape[0]),
        "seq_len": int(rows.shape[1]),
        "calibration_data": not args.scores,  # calibrated now, on the same --data
    }
    print(f"search: budget {describe(search.params)}", file=sys.stderr)
    result = search_with(
        model,
        sc.scores,
        rows,
        search,
        batch_size=args.batch_size,
        depth=depth,
        mamba_grouping=switches.mamba_grouping,
        progress=_print_candidate,
    )
    with atomic_output_dir(Path(args.out)) as tmp:
        result.write(tmp, data=data)
        save_like(
            loaded,
            tmp / "best",
            prune(model, sc.scores, result.best.targets, depth, switches.mamba_grouping),
        )
    print((Path(args.out) / "report.md").read_text())
    print(f"chosen model: {Path(args.out) / 'best'}")
    return 0


def _print_candidate(i: int, n: int, c) -> None:
    """One stderr line per scored candidate."""
    targets = ", ".join(f"{k}={v}" for k, v in c.targets.items())
    loss = f"loss {c.loss:.4f}"
    if c.distilled_loss is not None:
        loss += f" -> {c.distilled_loss:.4f} distilled"
    print(f"  candidate {i}/{n}: {c.params:,} params, {loss} ({targets})", file=sys.stderr)


def _calibration_args(sp: argparse.ArgumentParser, required: bool) -> None:
    sp.add_argument("--data", required=required, help=".txt, .jsonl or .npy calibration data")
    sp.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the model's)")
    add_dataclass_args(sp, ScoreConfig)


def add_parsers(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    sp = sub.add_parser(
        "importance", help="activation importance scores from calibration data", formatter_class=fmt
    )
    sp.add_argument("model")
    sp.add_argument("--out", required=True, help="scores file (.npz)")
    _calibration_args(sp, required=True)
    sp.set_defaults(fn=cmd_importance)

    sp = sub.add_parser(
        "prune", help="prune a model to targets (HF config names)", formatter_class=fmt
    )
    sp.add_argument("model")
    sp.add_argument("out")
    sp.add_argument("--scores", help="scores from `jaxprune importance`")
    sp.add_argument(
        "--target",
        required=True,
        help="e.g. hidden_size=3072,mamba_num_heads=112,num_hidden_layers=40",
    )
    _calibration_args(sp, required=False)
    sp.set_defaults(fn=cmd_prune)

    sp = sub.add_parser(
        "search", help="architecture search under a parameter budget", formatter_class=fmt
    )
    sp.add_argument("model")
    sp.add_argument("--scores", help="scores from `jaxprune importance` (else calibrate)")
    sp.add_argument("--out", required=True)
    add_dataclass_args(sp, SearchConfig, required=("params",))
    _calibration_args(sp, required=True)
    sp.set_defaults(fn=cmd_search)
