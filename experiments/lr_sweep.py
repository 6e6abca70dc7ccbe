"""The distillation learning-rate sweep (issue 16, item 12): pick ``OptimConfig.lr``'s default.

    python experiments/lr_sweep.py [--quick] [--out DIR] [--lrs 1e-4,3e-4,1e-3,3e-3]
                                   [--steps 150,600] [--seeds N] [--teacher M] [--data F]

The study's teacher (trained here on the KJV, or ``--teacher``), its width-pruned student
at about half the parameters, distilled at each learning rate for each run length, with
the library's default schedule otherwise. Runs are cached under OUT (shared with
``experiments/study.py --out OUT``); writes OUT/lr_sweep.json and OUT/LR_SWEEP.md. The
logic lives in :mod:`jaxprune.study.lr_sweep`; this script only parses the options.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from jaxprune.errors import UserError
from jaxprune.study.config import SIZES
from jaxprune.study.lr_sweep import SweepConfig, render, run_sweep


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> int:
    d = SweepConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", help="native or HF model (default: train and cache one)")
    ap.add_argument("--data", help=".txt/.txt.gz/.jsonl/.npy (default: KJV, else stdlib)")
    ap.add_argument("--out", default="study-out", help="output and cache directory")
    ap.add_argument("--quick", action="store_true", help="the study's --quick sizes")
    ap.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)  # tests: tiny
    ap.add_argument("--lrs", type=_floats, default=d.lrs, help="comma-separated")
    ap.add_argument("--steps", type=_ints, default=d.steps, help="run lengths, comma-separated")
    ap.add_argument("--seeds", type=int, default=d.seeds)
    args = ap.parse_args(argv)
    cfg = SIZES[args.size or ("quick" if args.quick else "full")]
    command = shlex.join(
        ["python", "experiments/lr_sweep.py", *(sys.argv[1:] if argv is None else argv)]
    )
    try:
        if args.seeds < 1 or min(args.steps) < 1 or min(args.lrs) <= 0:
            raise UserError("need --seeds >= 1, --steps >= 1 and --lrs > 0")
        res = run_sweep(
            cfg,
            SweepConfig(lrs=args.lrs, steps=args.steps, seeds=args.seeds),
            Path(args.out),
            teacher=args.teacher,
            data=args.data,
            command=command,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(res), end="")
    print(f"wrote {Path(args.out) / 'lr_sweep.json'} and {Path(args.out) / 'LR_SWEEP.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
