"""``jaxprune info``, ``check``, ``convert`` and ``export``: a model's config and files."""

from __future__ import annotations

import argparse
import json
import time

from jaxprune.errors import UserError
from jaxprune.presets import PRESETS


def _config(args: argparse.Namespace):
    from jaxprune.models import resolve_config

    spec = args.model or args.config or args.preset
    return resolve_config(spec)


def cmd_info(args: argparse.Namespace) -> int:
    from jaxprune.counts import count_params

    cfg = _config(args)
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

    for name in ("batch", "seq_len", "new_tokens"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    cfg = _config(args)
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


def cmd_convert(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import convert

    out = convert(args.src, args.out, dtype=args.dtype)
    print(f"wrote native checkpoint {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import export
    from jaxprune.converters.fsutil import parse_size

    shard = parse_size(args.shard_size) if args.shard_size else None
    out = export(
        args.src,
        args.out,
        dtype=args.dtype,
        shard_size=shard,
        model_type=args.model_type,
        per_layer_mlp=args.per_layer_mlp,
    )
    print(f"wrote HF model {out}")
    return 0


def _model_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "model", nargs="?", default=None, help="a native checkpoint, HF directory or config JSON"
    )
    sp.add_argument("--preset", default="tiny-hybrid", help=f"one of {', '.join(PRESETS)}")
    sp.add_argument("--config", help="a model config JSON (ModelConfig.to_dict)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")


def add_parsers(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    sp = sub.add_parser("info", help="parameter counts of a model", formatter_class=fmt)
    _model_args(sp)
    sp.set_defaults(fn=cmd_info)

    sp = sub.add_parser(
        "check", help="build a model, verify decoding and causality, time it", formatter_class=fmt
    )
    _model_args(sp)
    sp.add_argument("--batch", type=int, default=4)
    sp.add_argument("--seq-len", type=int, default=64)
    sp.add_argument("--new-tokens", type=int, default=32)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(fn=cmd_check)

    sp = sub.add_parser(
        "convert", help="HF / PyTorch directory -> native checkpoint", formatter_class=fmt
    )
    sp.add_argument("src")
    sp.add_argument("out")
    sp.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default=None,
        help="store parameters in this dtype (default: as in the source)",
    )
    sp.set_defaults(fn=cmd_convert)

    sp = sub.add_parser("export", help="native checkpoint -> HF directory", formatter_class=fmt)
    sp.add_argument("src")
    sp.add_argument("out")
    sp.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    sp.add_argument("--shard-size", default=None, help="e.g. 5GB; default: one file")
    sp.add_argument(
        "--model-type", default=None, help="HF model_type to write (default: the source's)"
    )
    sp.add_argument(
        "--per-layer-mlp",
        action="store_true",
        help="Nemotron-H: write per-layer MLP widths as the list vLLM reads",
    )
    sp.set_defaults(fn=cmd_export)
