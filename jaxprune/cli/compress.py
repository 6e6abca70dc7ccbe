"""``jaxprune compress`` (the staged pipeline from a gin config) and ``jaxprune demo``."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_compress(args: argparse.Namespace) -> int:
    from jaxprune.cli.gin import config_from_gin
    from jaxprune.pipeline import CompressConfig, run_compress

    cfg = config_from_gin([args.config], args.gin_param, CompressConfig)
    summary = run_compress(cfg)
    print((Path(cfg.out) / "report.md").read_text())
    return 0 if summary["rows"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from jaxprune.demo import TINY, DemoConfig, run_demo

    cfg = TINY if args.tiny else DemoConfig()
    run_demo(cfg, out=Path(args.out), cache=Path(args.cache_dir) if args.cache_dir else None)
    return 0


def add_parsers(sub) -> None:
    sp = sub.add_parser("demo", help="the whole recipe in miniature on the stdlib sources")
    sp.add_argument("--out", default="jaxprune-demo", help="where the report and student go")
    sp.add_argument("--cache-dir", default=None, help="teacher cache (default ~/.cache/jaxprune)")
    sp.add_argument("--tiny", action="store_true", help="a seconds-long smoke version")
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("compress", help="the staged, resumable pipeline from a gin config")
    sp.add_argument(
        "config",
        help="a gin file binding CompressConfig, ScoreConfig, SearchConfig and the trainer's "
        "configs (experiments/configs/recipes)",
    )
    sp.add_argument("--gin_param", "--gin-param", action="append", default=[])
    sp.set_defaults(fn=cmd_compress)
