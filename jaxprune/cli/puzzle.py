"""``jaxprune puzzle``: a thin command over :func:`jaxprune.puzzle.mini.run_minipuzzle`.

    jaxprune puzzle MODEL --data FILE (--memory-gb X | --params P) --out DIR
        [--memory-batch B --memory-context T] [--ffn-divisor N] [--rank-top N]
        [--top-k K --distill-steps N] [--scores FILE | calibration flags]

OUT: ``student/`` (the chosen model, native; distilled only for the ranking, so distill it
with ``jaxprune distill``), ``choices.json`` (per parent block: kind, depth score, kept,
FFN width), ``candidates.json``, ``report.md`` and ``puzzle.png``. The mode is MiniPuzzle
(Nemotron-H's 56B -> 47B): blocks dropped per kind, one FFN width for all layers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxprune.cli.flags import add_dataclass_args, dataclass_from_args
from jaxprune.puzzle.mini import MiniPuzzleConfig


def cmd_puzzle(args: argparse.Namespace) -> int:
    from jaxprune.atomic import atomic_output_dir
    from jaxprune.cli.prune import _rows, _scores, save_like
    from jaxprune.errors import UserError
    from jaxprune.models import resolve_model
    from jaxprune.pruning.prune import prune
    from jaxprune.puzzle.mini import (
        _budget_text,
        check_budget,
        choices,
        grid_axes,
        run_minipuzzle,
    )
    from jaxprune.puzzle.report import write_report

    mini = dataclass_from_args(MiniPuzzleConfig, args)
    if args.mamba_grouping != "aware":
        raise UserError("puzzle: --mamba-grouping unaware is a study switch of prune / search")
    loaded = resolve_model(args.model, tokenizer=args.tokenizer)
    model = loaded.model
    axes = grid_axes(model.config, mini)
    check_budget(model.config, mini)  # before calibrating
    sc = _scores(loaded, args)
    depth = sc.depth(args.depth_method)
    rows = _rows(loaded, args.data, args.seq_len, mini.eval_samples)
    print(f"puzzle: budget {_budget_text(mini)}", file=sys.stderr)
    result = run_minipuzzle(
        model, sc.scores, rows, mini, depth=depth, batch_size=args.batch_size,
        progress=_print_candidate,
    )  # fmt: skip
    picked = choices(model.config, sc.scores, result.best, depth)
    data = {"data": args.data, "rows": int(rows.shape[0]), "seq_len": int(rows.shape[1])}
    with atomic_output_dir(Path(args.out)) as tmp:
        write_report(tmp, result, picked, axes, _budget_text(mini), data)
        save_like(loaded, tmp / "student", prune(model, sc.scores, result.best.targets, depth))
    print((Path(args.out) / "report.md").read_text())
    print(f"chosen model: {Path(args.out) / 'student'}")
    return 0


def _print_candidate(i: int, n: int, c) -> None:
    e = c.extra
    targets = ", ".join(f"{k}={v}" for k, v in c.targets.items())
    print(
        f"  candidate {i}/{n}: {c.params:,} params, accuracy {e['accuracy']:.4f}, agreement "
        f"{e['agreement']:.4f}, loss {c.loss:.4f} ({targets})",
        file=sys.stderr,
    )


def add_parsers(sub) -> None:
    from jaxprune.cli.prune import _calibration_args

    sp = sub.add_parser(
        "puzzle",
        help="MiniPuzzle: blocks kept per kind x FFN width under a memory/parameter budget",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument("model")
    sp.add_argument("--scores", help="scores from `jaxprune importance` (else calibrate)")
    sp.add_argument("--out", required=True)
    add_dataclass_args(sp, MiniPuzzleConfig)
    _calibration_args(sp, required=True)
    sp.set_defaults(fn=cmd_puzzle, depth_method="hidden_mse")
