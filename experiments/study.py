"""The ablation study: do the five Minitron / group-aware SSM pruning findings hold here?

    python experiments/study.py [--teacher MODEL] [--data FILE] [--out DIR] [--seeds N]
                                [--zero-shot-only] [--quick]

(a) Mamba heads vs head channels vs both at equal parameters, (b) group-aware vs unaware
heads, (c) width vs depth at ~50% parameters after distillation, (d) pruned + distilled vs
from scratch at 1x..16x the tokens, (e) importance vs random rankings. Every run is cached
under OUT and resumed on rerun; writes OUT/results.json and OUT/STUDY.md (with plots).
The logic lives in :mod:`jaxprune.study`; this script only parses the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from jaxprune.errors import UserError
from jaxprune.study.config import SIZES
from jaxprune.study.run import run_study


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", help="native or HF model (default: train and cache one)")
    ap.add_argument("--data", help=".txt/.txt.gz/.jsonl/.npy (default: KJV, else stdlib)")
    ap.add_argument("--out", default="study-out", help="output and cache directory")
    ap.add_argument("--seeds", type=int, help="zero-shot seeds (distillation: at most 3)")
    ap.add_argument("--zero-shot-only", action="store_true", help="skip distillation runs")
    ap.add_argument("--quick", action="store_true", help="smallest settings (minutes)")
    ap.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)  # tests: tiny
    ap.add_argument("--distill-steps", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cfg = SIZES[args.size or ("quick" if args.quick else "full")].with_seeds(args.seeds)
    if args.distill_steps:
        cfg = dataclasses.replace(cfg, distill_steps=args.distill_steps)
    command = shlex.join(
        ["python", "experiments/study.py", *(sys.argv[1:] if argv is None else argv)]
    )
    try:
        if args.seeds is not None and args.seeds < 1:
            raise UserError("--seeds must be >= 1")
        res = run_study(
            cfg,
            Path(args.out),
            teacher=args.teacher,
            data=args.data,
            zero_shot_only=args.zero_shot_only,
            command=command,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for fid, f in res["findings"].items():
        print(f"({fid}) {'reproduced' if f['reproduced'] else 'not reproduced'}: {f['claim']}")
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'STUDY.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
