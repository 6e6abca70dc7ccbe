"""The ``jaxprune`` command line.

Commands:
  demo        train a small hybrid teacher, prune it 2x, distill, compare (~10 min, CPU)
  compress    load -> importance -> search/targets -> prune -> distill -> eval -> export
  check       build a built-in model, verify cached decoding and causality, generate, time it
  info        parameter counts (total / active / per block type) of a preset or config JSON
  convert     HF / PyTorch model directory -> native checkpoint
  export      native checkpoint -> HF directory that transformers loads unchanged
  eval        next-token cross-entropy and perplexity of a model on a data file
  importance  activation-based importance scores from calibration data
  prune       prune a model to targets given in HF config names
  search      architecture search under a parameter / memory budget
  distill     distill a student from a teacher (sharded, resumable)
  train       plain language-model training
  generate    generate text from prompts, streaming tokens
  bench       prefill / decode throughput, time to first token and cache size, side by side
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
    from jaxprune.counts import count_params

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


def cmd_convert(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import convert

    out = convert(args.src, args.out, dtype=args.dtype)
    print(f"wrote native checkpoint {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import export
    from jaxprune.converters.fsutil import parse_size

    shard = parse_size(args.shard_size) if args.shard_size else None
    out = export(args.src, args.out, dtype=args.dtype, shard_size=shard, model_type=args.model_type)
    print(f"wrote HF model {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import load_model, model_tokenizer
    from jaxprune.evaluation import evaluate_lm_loss, load_eval_rows

    if args.tasks:
        return _eval_tasks(args)
    if not args.data:
        raise CLIError("eval: pass --data FILE or --tasks t1,t2")
    model, _ = load_model(args.model)
    tokenizer = model_tokenizer(args.model)
    rows = load_eval_rows(
        args.data, seq_len=args.seq_len, tokenizer=tokenizer, max_rows=args.max_rows
    )
    result = evaluate_lm_loss(model, rows, batch_size=args.batch_size, progress=not args.json)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"loss {result['loss']:.4f} nats, ppl {result['ppl']:.3f} over "
            f"{result['tokens']:,} tokens ({result['rows']} rows)"
        )
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from jaxprune.pipeline import CompressConfig, run_compress
    from jaxprune.train.cli import config_from_gin

    cfg = config_from_gin([args.config], args.gin_param, CompressConfig)
    summary = run_compress(cfg)
    print((Path(cfg.out) / "report.md").read_text())
    return 0 if summary["rows"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from jaxprune.demo import TINY, DemoConfig, run_demo

    cfg = TINY if args.tiny else DemoConfig()
    run_demo(cfg, out=Path(args.out), cache=Path(args.cache_dir) if args.cache_dir else None)
    return 0


def _eval_tasks(args: argparse.Namespace) -> int:
    try:
        from jaxprune.lm_eval_adapter import run_tasks
    except ImportError as e:
        raise CLIError(f"{e} (install the eval extra: pip install -e '.[eval]')") from e
    limit = args.limit
    if limit is not None and limit >= 1 and float(limit).is_integer():
        limit = int(limit)
    out = run_tasks(
        args.model,
        args.tasks,
        include_path=args.include_path,
        limit=limit,
        batch_size=args.batch_size,
        num_fewshot=args.num_fewshot,
    )
    if args.json:
        print(json.dumps(out))
    else:
        for task, metrics in out["results"].items():
            vals = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"{task}: {vals}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxprune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--preset", default="tiny-hybrid", help=f"one of {', '.join(PRESETS)}")
        sp.add_argument("--config", help="a model config JSON (ModelConfig.to_dict)")
        sp.add_argument("--json", action="store_true", help="print one JSON object")

    sp = sub.add_parser("demo", help="the whole recipe in miniature on the stdlib sources")
    sp.add_argument("--out", default="jaxprune-demo", help="where the report and student go")
    sp.add_argument("--cache-dir", default=None, help="teacher cache (default ~/.cache/jaxprune)")
    sp.add_argument("--tiny", action="store_true", help="a seconds-long smoke version")
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("compress", help="the staged, resumable pipeline from a gin config")
    sp.add_argument("config", help="a gin file binding CompressConfig (experiments/configs)")
    sp.add_argument("--gin_param", "--gin-param", action="append", default=[])
    sp.set_defaults(fn=cmd_compress)

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

    sp = sub.add_parser("convert", help="HF / PyTorch directory -> native checkpoint")
    sp.add_argument("src")
    sp.add_argument("out")
    sp.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default=None,
        help="store parameters in this dtype (default: as in the source)",
    )
    sp.set_defaults(fn=cmd_convert)

    sp = sub.add_parser("export", help="native checkpoint -> HF directory")
    sp.add_argument("src")
    sp.add_argument("out")
    sp.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    sp.add_argument("--shard-size", default=None, help="e.g. 5GB; default: one file")
    sp.add_argument(
        "--model-type",
        default=None,
        help="HF model_type to write (default: the source's, else inferred)",
    )
    sp.set_defaults(fn=cmd_export)

    sp = sub.add_parser("eval", help="mean next-token cross-entropy and perplexity")
    sp.add_argument("model", help="a native checkpoint or an HF directory")
    sp.add_argument("--data", default=None, help=".txt, .jsonl (text field) or .npy token ids")
    sp.add_argument(
        "--tasks", default=None, help="comma-separated lm-eval tasks (needs the eval extra)"
    )
    sp.add_argument("--include-path", default=None, help="directory of extra task YAMLs")
    sp.add_argument("--limit", type=float, default=None)
    sp.add_argument("--num-fewshot", type=int, default=None)
    sp.add_argument("--seq-len", type=int, default=512)
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--max-rows", type=int, default=None)
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(fn=cmd_eval)

    from jaxprune.pruning.cli import add_parsers as pruning_parsers
    from jaxprune.pruning.cli import add_search_parser

    pruning_parsers(sub)
    add_search_parser(sub)

    from jaxprune.train.cli import add_parsers as train_parsers

    train_parsers(sub)

    from jaxprune.inference.cli import add_parsers as inference_parsers

    inference_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for name in ("batch", "seq_len", "new_tokens", "batch_size"):
            if getattr(args, name, 1) < 1:
                raise CLIError(f"--{name.replace('_', '-')} must be >= 1")
        return args.fn(args)
    except (CLIError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"jaxprune: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
