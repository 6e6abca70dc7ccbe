"""``jaxprune generate`` and ``jaxprune bench``: thin commands over
:func:`jaxprune.inference.generate_text` and :func:`jaxprune.inference.bench.run_bench`."""

from __future__ import annotations

import argparse
import json
import sys

from jaxprune.errors import UserError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _ids(text: str) -> list[int]:
    """``--prompt-ids 1,2,3``: token ids (>= 0)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token ids >= 0 (e.g. 1,2,3), got {text!r}"
        )
    return values


def cmd_generate(args: argparse.Namespace) -> int:
    from jaxprune.inference import Decoder
    from jaxprune.models import resolve_model

    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    loaded = resolve_model(args.model, tokenizer=args.tokenizer, seed=args.seed, budget=args.budget)
    if args.prompt and loaded.tokenizer is None:
        raise UserError(f"{args.model}: no tokenizer.json; pass --tokenizer PATH or --prompt-ids")
    decoder = Decoder(
        loaded.model, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p
    )
    status = (_generate_ids if args.prompt_ids else _generate_text)(args, loaded, decoder)
    _report_dmc(decoder)
    return status


def _report_dmc(decoder) -> None:
    """A DMC model's achieved cache compression (stderr, one line per block)."""
    from jaxprune.dmc.measure import cache_compression

    kv = None if decoder.last_cache is None else cache_compression(decoder.last_cache)
    if kv is None:
        return
    print(
        f"DMC KV cache: {kv['ratio']:.2f} tokens per slot, {kv['used_bytes']:,} bytes used "
        f"(an ordinary cache: {kv['plain_bytes']:,})",
        file=sys.stderr,
    )
    for i, b in kv["blocks"].items():
        heads = ", ".join(f"{h:.2f}" for h in b["heads"])
        print(f"  block {i}: {b['ratio']:.2f}x (per KV head: {heads})", file=sys.stderr)


def _generate_ids(args: argparse.Namespace, loaded, decoder) -> int:
    """Prompts given as token ids: print the new ids (and their text, given a tokenizer)."""
    import jax

    from jaxprune.inference import generate_ids

    tok = loaded.tokenizer
    eos = tok.eos_id if tok is not None else None
    key = jax.random.key(args.seed)
    outs = generate_ids(decoder, args.prompt_ids, args.max_new_tokens, key=key, eos_id=eos)
    rows = []
    for p, o in zip(args.prompt_ids, outs, strict=True):
        row = {"prompt_ids": p, "completion_ids": o}
        if tok is not None:
            row["completion"] = tok.decode(o)
        rows.append(row)
    if args.json:
        print(json.dumps(rows))
        return 0
    for i, row in enumerate(rows):
        print(f"[{i}] ids: {' '.join(map(str, row['completion_ids']))}")
        if "completion" in row:
            print(f"[{i}] text: {row['completion']!r}")
    return 0


def _generate_text(args: argparse.Namespace, loaded, decoder) -> int:
    import jax

    from jaxprune.inference import generate_text

    single = len(args.prompt) == 1
    shown = [""] * len(args.prompt)

    def on_step(_: int, texts: list[str]) -> None:
        for i, text in enumerate(texts):
            delta = text[len(shown[i]) :] if text.startswith(shown[i]) else text
            if delta and not args.json:
                sys.stdout.write(delta if single else f"[{i}] {delta!r}\n")
                sys.stdout.flush()
            shown[i] = text

    if single and not args.json:
        sys.stdout.write(args.prompt[0])
    texts = generate_text(
        decoder,
        loaded.tokenizer,
        args.prompt,
        args.max_new_tokens,
        key=jax.random.key(args.seed),
        eos_id=loaded.tokenizer.eos_id,
        on_step=on_step,
    )
    if args.json:
        print(json.dumps([{"prompt": p, "completion": t} for p, t in zip(args.prompt, texts)]))
    elif single:
        print()
    else:
        for i, (p, t) in enumerate(zip(args.prompt, texts)):
            print(f"--- [{i}] ---\n{p}{t}")
    return 0


def bench_names(specs: list[str]) -> list[str]:
    """Row names: each model as given (a preset, or its path: ``runs/a/hf`` and
    ``runs/b/hf`` stay apart), a repeated spec numbered."""
    out, seen = [], {}
    for spec in specs:
        seen[spec] = seen.get(spec, 0) + 1
        out.append(spec if seen[spec] == 1 else f"{spec} #{seen[spec]}")
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from jaxprune.inference.bench import run_bench
    from jaxprune.inference.report import to_markdown, write_report
    from jaxprune.models import resolve_model

    if args.gen_len < 1 or args.repeats < 1:
        raise UserError("--gen-len and --repeats must be >= 1")
    models = []
    for name, spec in zip(bench_names(args.models), args.models, strict=True):
        if args.budget is None:
            models.append((name, resolve_model(spec, seed=args.seed).model))
            continue
        for b in args.budget:  # each trained budget of an elastic checkpoint, side by side
            models.append((f"{name} @ {b:g}", resolve_model(spec, budget=b).model))

    def progress(row: dict) -> None:
        if not args.json:
            print(
                f"  {row['model']} prompt {row['prompt_len']} batch {row['batch']}: "
                f"decode {row['decode_tok_s'] or 0:,.0f} tok/s",
                file=sys.stderr,
            )

    report = run_bench(
        models,
        prompt_lens=args.prompt_lens,
        batches=args.batch_sizes,
        gen_len=args.gen_len,
        repeats=args.repeats,
        progress=progress,
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(to_markdown(report), end="")
    if args.out:
        for line in write_report(report, args.out):
            print(f"wrote {line}" if not line.startswith("matplotlib") else line, file=sys.stderr)
    return 0


def _budgets(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected budgets like 1.0,0.5, got {text!r}") from None


def add_parsers(subparsers) -> None:
    """Register ``generate`` and ``bench`` on the main parser's subparsers."""
    sp = subparsers.add_parser("generate", help="generate text from prompts (streamed)")
    sp.add_argument("model", help="a native checkpoint, an HF directory or a preset name")
    sp.add_argument(
        "--budget", type=float, default=None, help="an elastic checkpoint's trained budget"
    )
    prompts = sp.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", action="append", help="prompt text; repeat for a batch")
    prompts.add_argument(
        "--prompt-ids",
        action="append",
        type=_ids,
        help="a prompt of token ids, e.g. 1,2,3 (no tokenizer needed); repeat for a batch",
    )
    sp.add_argument("--max-new-tokens", type=int, default=64)
    sp.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    sp.add_argument("--top-k", type=int, default=None)
    sp.add_argument("--top-p", type=float, default=None)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the model's)")
    sp.add_argument("--json", action="store_true", help="print one JSON list at the end")
    sp.set_defaults(fn=cmd_generate)

    sp = subparsers.add_parser("bench", help="prefill / decode speed and cache size of models")
    sp.add_argument("models", nargs="+", help="checkpoints, HF directories or preset names")
    sp.add_argument(
        "--budget",
        type=_budgets,
        default=None,
        help="elastic checkpoints: bench these trained budgets' children, e.g. 1.0,0.75,0.5",
    )
    sp.add_argument("--prompt-len", dest="prompt_lens", type=_int_list, default=[2048])
    sp.add_argument("--gen-len", type=int, default=256)
    sp.add_argument("--batch", dest="batch_sizes", type=_int_list, default=[1])
    sp.add_argument("--repeats", type=int, default=2, help="timed runs (the best is kept)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default=None, help="write bench.json, bench.md and bench.png here")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(fn=cmd_bench)
