"""``jaxprune puzzle``: a thin command over :func:`jaxprune.puzzle.full.run_puzzle` (``--mode
full``, the default) and :func:`jaxprune.puzzle.mini.run_minipuzzle` (``--mode mini``).

    jaxprune puzzle MODEL --data FILE (--params 0.5|4e9 | --active-params P | --memory-gb X
        | --latency-ms X) [--bld-steps N] [--top-k 5] [--distill-steps N] --out DIR
    jaxprune puzzle MODEL --mode mini --data FILE (--memory-gb X | --params P) --out DIR

Full mode: OUT holds ``student/`` (the chosen heterogeneous student, a native checkpoint;
distilled for ``--distill-steps`` when given), ``choices.json`` (per block: variant,
score, parameters), ``solutions.json``, ``library.json``, ``report.md`` and
``puzzle.png``; ``OUT/cache`` keeps the library's scores and BLD weights, so a rerun
(another budget, another top-k) reuses them. Mini mode (Nemotron-H's 56B -> 47B: blocks
dropped per kind, one FFN width) writes ``student/``, ``choices.json``,
``candidates.json``, ``report.md`` and ``puzzle.png`` into a new OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import shutil
import sys
from pathlib import Path

from jaxprune.cli.flags import add_dataclass_args, dataclass_from_args
from jaxprune.puzzle.full import PuzzleConfig
from jaxprune.puzzle.mini import MiniPuzzleConfig

_MINI = {f.name: f for f in dataclasses.fields(MiniPuzzleConfig)}
_FULL = {f.name: f for f in dataclasses.fields(PuzzleConfig)}


def _only_in_other_mode(args: argparse.Namespace, mode: str) -> None:
    """A flag of the other mode given with a non-default value is an error, not ignored."""
    from jaxprune.errors import UserError

    mine, other = (_FULL, _MINI) if mode == "full" else (_MINI, _FULL)
    for name, f in other.items():
        if name not in mine and getattr(args, name, f.default) != f.default:
            flag = "--" + name.replace("_", "-")
            other_mode = "mini" if mode == "full" else "full"
            raise UserError(f"puzzle: {flag} is an option of --mode {other_mode}")


def cmd_puzzle(args: argparse.Namespace) -> int:
    from jaxprune.errors import UserError

    if args.mamba_grouping != "aware":
        raise UserError("puzzle: --mamba-grouping unaware is a study switch of prune / search")
    _only_in_other_mode(args, args.mode)
    return _full(args) if args.mode == "full" else _mini(args)


def _full(args: argparse.Namespace) -> int:
    from jaxprune.cli.prune import _rows, _scores, save_like
    from jaxprune.counts import count_params
    from jaxprune.errors import UserError
    from jaxprune.models import resolve_model
    from jaxprune.puzzle.full import check_budget, choices, run_puzzle
    from jaxprune.puzzle.full_report import write_full_report

    cfg = dataclass_from_args(PuzzleConfig, args)
    loaded = resolve_model(args.model, tokenizer=args.tokenizer)
    model = loaded.model
    check_budget(model.config, cfg)  # before calibrating
    n = cfg.score_samples + (0 if args.eval_data else cfg.eval_samples)
    rows = _rows(loaded, args.data, args.seq_len, n)
    if args.eval_data:
        eval_rows = _rows(loaded, args.eval_data, args.seq_len, cfg.eval_samples, "eval data")
    else:
        rows, eval_rows = rows[: cfg.score_samples], rows[cfg.score_samples :]
        if len(eval_rows) == 0:
            raise UserError(
                f"puzzle: {args.data} has no rows left after the {cfg.score_samples} scoring "
                "rows to rank on; give more data, fewer --score-samples or --eval-data"
            )
    sc = _scores(loaded, args)
    out = Path(args.out)
    if out.is_file():
        raise UserError(f"puzzle: --out {out} is a file")
    print(f"puzzle: budget {cfg.budget_text()}", file=sys.stderr)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    result = run_puzzle(model, sc.scores, rows, eval_rows, cfg, cache_dir=out / "cache",
                        batch_size=args.batch_size, log=log)  # fmt: skip
    picked = choices(model.config, result)
    data = {"data": args.data, "rows": int(rows.shape[0]), "eval_rows": int(eval_rows.shape[0]),
            "seq_len": int(rows.shape[1])}  # fmt: skip
    staging = out / f".staging-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        save_like(loaded, staging / "student", result.student)
        write_full_report(
            staging, result, picked, parent_params=count_params(model.config)["total"],
            budget=cfg.budget_text(), data=data,
            distilled=bool(cfg.distill_steps), bld_steps=cfg.bld_steps,
        )  # fmt: skip
        from jaxprune.atomic import publish_into

        publish_into(staging, out, last="report.md")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print((out / "report.md").read_text())
    print(f"chosen model: {out / 'student'}")
    return 0


def _mini(args: argparse.Namespace) -> int:
    from jaxprune.atomic import atomic_output_dir
    from jaxprune.cli.prune import _rows, _scores, save_like
    from jaxprune.models import resolve_model
    from jaxprune.pruning.prune import prune
    from jaxprune.puzzle.mini import _budget_text, check_budget, choices, grid_axes, run_minipuzzle
    from jaxprune.puzzle.report import write_report

    mini = dataclass_from_args(MiniPuzzleConfig, args)
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
        help="Puzzle: per-block variants chosen by a MIP under parameter / memory / latency "
        "budgets (--mode full), or MiniPuzzle's blocks-per-kind x FFN-width grid (--mode mini)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument("model")
    sp.add_argument("--mode", choices=("full", "mini"), default="full")
    sp.add_argument("--scores", help="scores from `jaxprune importance` (else calibrate)")
    sp.add_argument("--eval-data", help="held-out rows to rank on (full mode; default: --data "
                    "rows after the scoring rows)")  # fmt: skip
    sp.add_argument("--out", required=True)
    add_dataclass_args(sp, MiniPuzzleConfig)
    add_dataclass_args(sp, PuzzleConfig, only=[k for k in _FULL if k not in _MINI])
    _calibration_args(sp, required=True)
    sp.set_defaults(fn=cmd_puzzle, depth_method="hidden_mse")
