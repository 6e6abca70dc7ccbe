"""``jaxprune eval``: next-token loss on a data file, or lm-evaluation-harness tasks."""

from __future__ import annotations

import argparse
import json

from jaxprune.errors import UserError


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxprune.data import load_rows
    from jaxprune.dmc.measure import kv_compression
    from jaxprune.dmc.retrofit import dmc_blocks
    from jaxprune.evaluation import evaluate_lm_loss
    from jaxprune.models import resolve_model

    if args.tasks:
        if args.budget is not None:
            raise UserError("--budget with --tasks: extract the child first (jaxprune extract)")
        return _eval_tasks(args)
    if not args.data:
        raise UserError("eval: pass --data FILE or --tasks t1,t2")
    if args.seq_len < 1 or args.batch_size < 1:
        raise UserError("--seq-len and --batch-size must be >= 1")
    loaded = resolve_model(args.model, tokenizer=args.tokenizer, budget=args.budget)
    rows = load_rows(
        args.data,
        seq_len=args.seq_len,
        tokenizer=loaded.tokenizer,
        max_rows=args.max_rows,
    )
    result = evaluate_lm_loss(
        loaded.model, rows, batch_size=args.batch_size, progress=not args.json
    )
    if dmc_blocks(loaded.config):
        result["kv_compression"] = kv_compression(loaded.model, rows, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"loss {result['loss']:.4f} nats, ppl {result['ppl']:.3f} over "
        f"{result['tokens']:,} tokens ({result['rows']} rows)"
    )
    if "kv_compression" in result:
        kv = result["kv_compression"]
        per = ", ".join(f"block {i}: {b['ratio']:.2f}x" for i, b in kv["blocks"].items())
        print(f"KV cache compression {kv['ratio']:.2f}x ({kv['slots']:,} slots; {per})")
    return 0


def _eval_tasks(args: argparse.Namespace) -> int:
    try:
        from jaxprune.lm_eval_adapter import run_tasks
    except ImportError as e:
        raise UserError(f"{e} (install the eval extra: pip install -e '.[eval]')") from e
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


def add_parsers(sub) -> None:
    sp = sub.add_parser(
        "eval",
        help="mean next-token cross-entropy and perplexity",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument("model", help="a native checkpoint or an HF directory")
    sp.add_argument(
        "--budget", type=float, default=None, help="an elastic checkpoint's trained budget"
    )
    sp.add_argument("--data", default=None, help=".txt, .jsonl (text field) or .npy token ids")
    sp.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the model's)")
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
