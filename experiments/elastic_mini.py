"""The miniature Nemotron Elastic experiment (issue 13, item 4):

    python experiments/elastic_mini.py [--out DIR] [--teacher MODEL] [--data FILE]
                                       [--steps N] [--quick]

elastic 100/75/50% with T tokens vs separate compressions with T/2 each vs zero-shot slicing,
on the ablation study's teacher and data (with the study's --out, its cached teacher is
reused). The logic lives in :mod:`jaxprune.study.elastic_mini`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from jaxprune.errors import UserError
from jaxprune.study.config import SIZES
from jaxprune.study.elastic_mini import MiniConfig, run_elastic_mini


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/study/full", help="study / cache directory")
    ap.add_argument("--teacher", help="native or HF model (default: the study's teacher)")
    ap.add_argument("--data", help=".txt/.txt.gz/.jsonl/.npy (default: KJV, else stdlib)")
    ap.add_argument("--steps", type=int, default=None, help="elastic steps (T = steps x batch x T)")
    ap.add_argument("--quick", action="store_true", help="the study's quick size")
    ap.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)  # tests: tiny
    args = ap.parse_args(argv)
    cfg = SIZES[args.size or ("quick" if args.quick else "full")]
    mini = MiniConfig(align=8 if cfg.size == "full" else 1)
    if args.steps:
        mini = dataclasses.replace(mini, elastic_steps=args.steps)
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "experiments/elastic_mini.py", *argv])
    try:
        res = run_elastic_mini(cfg, mini, Path(args.out), teacher=args.teacher, data=args.data,
                               command=command)  # fmt: skip
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in res["rows"]:
        print(
            r["budget"], r["params"], r["elastic_loss"], r.get("separate_loss"), r["zero_shot_loss"]
        )
    print(f"wrote {Path(args.out) / 'ELASTIC.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
