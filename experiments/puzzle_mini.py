"""The miniature Puzzle experiment (issue 17, item 6):

    python experiments/puzzle_mini.py [--out DIR] [--teacher MODEL] [--data FILE]
                                      [--compressions 0.4,0.6] [--bld-steps N] [--quick]

heterogeneous Puzzle vs the uniform Minitron search at equal parameters, both distilled
for the same tokens, on the ablation study's teacher and data (with the study's --out, its
cached teacher is reused). The logic lives in :mod:`jaxprune.study.puzzle_mini`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from jaxprune.errors import UserError
from jaxprune.study.config import SIZES
from jaxprune.study.puzzle_mini import PuzzleMiniConfig, run_puzzle_mini


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/study/full", help="study / cache directory")
    ap.add_argument("--teacher", help="native or HF model (default: the study's teacher)")
    ap.add_argument("--data", help=".txt/.txt.gz/.jsonl/.npy (default: KJV, else stdlib)")
    ap.add_argument("--compressions", default="0.4,0.6", help="fractions of params removed")
    ap.add_argument("--bld-steps", type=int, default=None, help="blockwise distillation steps")
    ap.add_argument("--distill-steps", type=int, default=None, help="default: the study's")
    ap.add_argument("--quick", action="store_true", help="the study's quick size")
    ap.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)  # tests: tiny
    args = ap.parse_args(argv)
    cfg = SIZES[args.size or ("quick" if args.quick else "full")]
    try:
        comps = tuple(float(x) for x in args.compressions.split(","))
    except ValueError:
        print(f"error: --compressions {args.compressions!r}: comma-separated fractions",
              file=sys.stderr)  # fmt: skip
        return 2
    if not all(0 < c < 1 for c in comps):
        print("error: --compressions must lie in (0, 1)", file=sys.stderr)
        return 2
    mini = PuzzleMiniConfig(compressions=comps, distill_steps=args.distill_steps)
    if cfg.size != "full":
        mini = dataclasses.replace(mini, divisor=1, score_samples=8, rank_samples=8, top_k=2)
    if args.bld_steps is not None:
        mini = dataclasses.replace(mini, bld_steps=args.bld_steps)
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "experiments/puzzle_mini.py", *argv])
    try:
        res = run_puzzle_mini(cfg, mini, Path(args.out), teacher=args.teacher, data=args.data,
                              command=command)  # fmt: skip
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in res["rows"]:
        print(r["compression"], r["kind"], r["params"], r["zero_shot_loss"], r["distilled_loss"])
    print(f"wrote {Path(args.out) / 'PUZZLE.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
