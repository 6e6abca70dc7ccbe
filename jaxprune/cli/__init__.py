"""The ``jaxprune`` command line: the only package that parses arguments or gin.

Commands:
  demo        train a small hybrid teacher, prune it 2x, distill, compare (~10 min, CPU)
  compress    load -> importance -> search/targets -> prune -> distill -> eval -> export
  check       build a built-in model, verify cached decoding and causality, generate, time it
  info        parameter counts (total / active / per block type) of a model
  convert     HF / PyTorch model directory -> native checkpoint
  export      native checkpoint -> HF directory that transformers loads unchanged
  eval        next-token cross-entropy and perplexity of a model on a data file
  importance  activation-based importance scores from calibration data
  prune       prune a model to targets given in HF config names
  search      architecture search under a parameter / memory budget
  puzzle      MiniPuzzle: blocks kept per kind x FFN width under a memory budget
  distill     distill a student from a teacher (sharded, resumable)
  train       plain language-model training
  elastic     nested submodels of one parent with a trained router (Nemotron Elastic)
  extract     one budget's child of an elastic checkpoint
  dmc         retrofit attention with DMC: learned KV-cache compression (per head)
  generate    generate text from prompts, streaming tokens
  bench       prefill / decode throughput, time to first token and cache size, side by side

Every command calls the library function that does its work (the same one the ``compress``
pipeline and Python users call). Bad input (:class:`~jaxprune.errors.UserError`, a missing
file) is printed as one line with exit status 2; anything else is a bug and keeps its
traceback (exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxprune.errors import UserError

#: Exit statuses shared by every command.
EXIT_USAGE = 2
EXIT_NONFINITE = 1
EXIT_PREEMPTED = 143

#: OSErrors that mean "the path you gave is wrong", not a bug.
_PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def build_parser() -> argparse.ArgumentParser:
    from jaxprune.cli import (
        compress,
        dmc,
        elastic,
        evaluate,
        inference,
        model,
        prune,
        puzzle,
        train,
    )

    p = argparse.ArgumentParser(
        prog="jaxprune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_distributed(p)
    sub = p.add_subparsers(dest="command", required=True)
    _with_defaults_in_help(sub)
    for module in (compress, model, evaluate, prune, puzzle, train, elastic, dmc, inference):
        module.add_parsers(sub)
    return p


def _add_distributed(p: argparse.ArgumentParser) -> None:
    """Options of a multi-process run, given before the command (see jaxprune.distributed)."""
    g = p.add_argument_group(
        "multi-process runs (one process per host; before the command, e.g. "
        "`jaxprune --distributed distill ...`)"
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run found by JAX's cluster detection (SLURM, Open MPI, ...)",
    )
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    g.add_argument("--num-processes", type=int, default=None, help="number of processes")
    g.add_argument("--process-id", type=int, default=None, help="this process's id, 0-based")


def _join(args: argparse.Namespace) -> None:
    """Join the multi-process run the options or the environment ask for, if any."""
    from jaxprune.distributed import DistributedConfig, describe, initialize

    cfg = DistributedConfig(
        getattr(args, "coordinator", None),
        getattr(args, "num_processes", None),
        getattr(args, "process_id", None),
        bool(getattr(args, "distributed", False)),
    )
    if initialize(cfg)[1] > 1 or cfg.requested:
        print(describe(), file=sys.stderr)


def _with_defaults_in_help(sub) -> None:
    """Every command's ``--help`` shows each option's default."""
    add = sub.add_parser

    def add_parser(name: str, **kw):
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        return add(name, **kw)

    sub.add_parser = add_parser


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command with the one error mapping every command shares."""
    from jaxprune.train.trainer import NonFiniteError

    try:
        _join(args)
        return args.fn(args)
    except (UserError, *_PATH_ERRORS) as e:
        print(f"jaxprune: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteError as e:
        print(f"jaxprune: stopped: {one_line(e)}", file=sys.stderr)
        return EXIT_NONFINITE


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        return run_command(build_parser().parse_args(argv))
    except BrokenPipeError:  # `jaxprune info ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
