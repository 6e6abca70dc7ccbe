"""The ``jaxprune`` command line.

Commands so far:
  check  build a built-in model, verify cached decoding and causality, generate, time it
  info   parameter counts (total / active / per block type) of a preset or config JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jaxprune.config import ModelConfig
from jaxprune.presets import PRESETS, get_preset


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _load_config(args: argparse.Namespace) -> ModelConfig:
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise CLIError(f"config file not found: {path}")
        try:
            return ModelConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
            raise CLIError(f"bad model config {path}: {e}") from e
    try:
        return get_preset(args.preset)
    except ValueError as e:
        raise CLIError(str(e)) from e


def cmd_info(args: argparse.Namespace) -> int:
    from jaxprune.params import count_params

    cfg = _load_config(args)
    counts = count_params(cfg)
    if args.json:
        print(json.dumps({"name": cfg.name, "pattern": cfg.pattern, **counts}))
        return 0
    print(f"{cfg.name}: pattern {cfg.pattern}, hidden {cfg.hidden}, vocab {cfg.vocab_size}")
    for k, v in counts.items():
        print(f"  {k:<10} {v:>14,}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from jaxprune.check import run_check

    cfg = _load_config(args)
    t0 = time.perf_counter()
    report = run_check(
        cfg, batch=args.batch, seq_len=args.seq_len, new_tokens=args.new_tokens, seed=args.seed
    )
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print(json.dumps(report))
    else:
        _print_check(report)
    return 0 if report["ok"] else 1


def _print_check(r: dict) -> None:
    print(
        f"model {r['name']}: pattern {r['pattern']}, {r['params']['total']:,} params "
        f"({r['params']['active']:,} active)"
    )
    for k, v in r["params"].items():
        if k not in ("total", "active"):
            print(f"  {k:<10} {v:>12,}")
    for name, c in r["checks"].items():
        print(f"  [{'ok' if c['ok'] else 'FAIL'}] {name}: {c['detail']}")
    t = r["timing"]
    print(
        f"forward {t['forward_tokens_per_s']:,.0f} tok/s, decode {t['decode_tokens_per_s']:,.0f} "
        f"tok/s (batch {r['batch']}), cache {r['cache_bytes']} bytes"
    )
    print(f"sample continuation (token ids): {r['sample']}")
    print(f"{'all checks passed' if r['ok'] else 'CHECKS FAILED'} in {r['seconds']} s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxprune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--preset", default="tiny-hybrid", help=f"one of {', '.join(PRESETS)}")
        sp.add_argument("--config", help="a model config JSON (ModelConfig.to_dict)")
        sp.add_argument("--json", action="store_true", help="print one JSON object")

    sp = sub.add_parser("info", help="parameter counts of a model config")
    model_args(sp)
    sp.set_defaults(fn=cmd_info)

    sp = sub.add_parser("check", help="build a model, verify decoding and causality, time it")
    model_args(sp)
    sp.add_argument("--batch", type=int, default=4)
    sp.add_argument("--seq-len", type=int, default=64)
    sp.add_argument("--new-tokens", type=int, default=32)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(fn=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for name in ("batch", "seq_len", "new_tokens"):
            if getattr(args, name, 1) < 1:
                raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
        return args.fn(args)
    except CLIError as e:
        print(f"jaxprune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
