"""The miniature DMC experiment (issue 14, item 4):

    python experiments/dmc_mini.py [--out DIR] [--data FILE] [--kinds llama,hybrid]
                                   [--teacher-steps N] [--retrofit-steps N] [--context 4096]

Llama-style and hybrid teachers trained on the study's data; DMC at 2x / 4x against GQA
up-training to the same cache size, equal retrofit tokens; held-out loss, measured
compression per block and head, long-context decode and the largest batch in a memory
budget. The logic lives in :mod:`jaxprune.study.dmc_mini`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from jaxprune.errors import UserError
from jaxprune.study.config import SIZES
from jaxprune.study.dmc_mini import DMCMiniConfig, run_dmc_mini

#: the tests' size: a few steps of a tiny model
TINY = DMCMiniConfig(hidden=16, layers=1, heads=4, kv_heads=4, head_dim=8, ffn=24,
                     teacher_steps=4, retrofit_steps=3, context=64, decode_new=4)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/study/full", help="output / cache directory")
    ap.add_argument("--data", help=".txt/.txt.gz/.jsonl/.npy (default: KJV, else stdlib)")
    ap.add_argument("--kinds", default=None, help="comma-separated: llama,hybrid")
    ap.add_argument("--teacher-steps", type=int, default=None)
    ap.add_argument("--retrofit-steps", type=int, default=None)
    ap.add_argument("--context", type=int, default=None, help="long-context prompt length")
    ap.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)  # tests: tiny
    args = ap.parse_args(argv)
    cfg = SIZES[args.size or "full"]
    mini = TINY if cfg.size == "tiny" else DMCMiniConfig()
    changes = {
        k: v
        for k, v in (("teacher_steps", args.teacher_steps),
                     ("retrofit_steps", args.retrofit_steps), ("context", args.context))
        if v is not None
    }  # fmt: skip
    if args.kinds:
        kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
        if not kinds or set(kinds) - {"llama", "hybrid"}:
            print(f"error: --kinds takes llama and/or hybrid, got {args.kinds!r}", file=sys.stderr)
            return 2
        changes["kinds"] = kinds
    mini = dataclasses.replace(mini, **changes)
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "experiments/dmc_mini.py", *argv])
    try:
        res = run_dmc_mini(cfg, mini, Path(args.out), data=args.data, command=command)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in res["rows"]:
        print(r["kind"], r["method"], r["ratio"], r["loss_before"], r["loss"], r["max_batch"])
    print(f"wrote {Path(args.out) / 'DMC.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
