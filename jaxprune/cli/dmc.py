"""``jaxprune dmc``: a thin command over :func:`jaxprune.dmc.run.retrofit_dmc`.

    jaxprune dmc MODEL --data FILE --target-ratio 4 --steps N --out DIR
        [--teacher T] [--loss kd|lm] [--blocks 3,7] [run flags of distill] [--resume]

MODEL's attention blocks (``--blocks``: some of them) become DMC blocks and are trained to
compress their KV cache ``--target-ratio`` times, distilling from ``--teacher`` (default:
MODEL as given) or, with ``--loss lm``, on cross-entropy alone. OUT becomes a native DMC
checkpoint that ``eval``, ``generate`` and ``bench`` run with the compressed cache.
gin binds ``DMCTrainConfig`` (and ``TrainConfig``); flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from jaxprune.cli.train import _common, build_train_config, guarded
from jaxprune.errors import UserError


def _blocks(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected block indices like 3,7, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one block index")
    return out


def dmc_configs(args: argparse.Namespace):
    """(TrainConfig, DMCTrainConfig): gin, then the flags."""
    from jaxprune.cli.gin import configs_from_gin
    from jaxprune.dmc.objective import DMCTrainConfig
    from jaxprune.train.config import TrainConfig

    train, dmc = configs_from_gin(
        args.gin_file or [], args.gin_param or [], (TrainConfig, DMCTrainConfig)
    )
    train = build_train_config(args, distill=args.loss == "kd", base=train)
    flags = {
        "target_ratio": args.target_ratio,
        "ramp_fraction": args.ramp_fraction,
        "temperature": args.temperature,
        "blocks": args.blocks,
        "weight": args.dmc_weight,
    }
    return train, dataclasses.replace(dmc, **{k: v for k, v in flags.items() if v is not None})


def cmd_dmc(args: argparse.Namespace) -> int:
    from jaxprune.data import load_corpus
    from jaxprune.data.pipeline import check_one_batch
    from jaxprune.dmc.retrofit import with_dmc
    from jaxprune.dmc.run import retrofit_dmc
    from jaxprune.models import resolve_model

    train, dmc = dmc_configs(args)
    if args.teacher and args.loss == "lm":
        raise UserError("dmc: --teacher needs --loss kd (lm trains on cross-entropy alone)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a run directory")
    loaded = resolve_model(args.model, tokenizer=args.tokenizer)
    with_dmc(loaded.config, None, dmc.blocks)  # UserError: no attention, or a bad block
    vocab = loaded.config.vocab_size
    teacher = None
    if args.teacher:
        teacher = resolve_model(args.teacher, with_tokenizer=False).model
        if teacher.config.vocab_size != vocab:
            raise UserError(
                f"teacher vocabulary {teacher.config.vocab_size} differs from the model's {vocab}"
            )
    train_src = load_corpus(args.data, tokenizer=loaded.tokenizer, vocab_size=vocab)
    eval_src = None
    if args.eval_data:
        eval_src = load_corpus(args.eval_data, tokenizer=loaded.tokenizer, vocab_size=vocab)
    check_one_batch(train_src, batch_size=train.batch_size, seq_len=train.seq_len, what="data")
    print("compiling the DMC step (the first step takes longest)...", file=sys.stderr, flush=True)
    result, status = guarded(
        lambda: retrofit_dmc(
            loaded.model,
            train_source=train_src,
            out=Path(args.out),
            train=train,
            dmc=dmc,
            teacher=teacher,
            resume=args.resume,
            eval_source=eval_src,
            family=loaded.family,
            hf_config=loaded.hf_config,
            aux_dir=loaded.source,
        ),
        Path(args.out),
    )
    if status is not None:
        return status
    metrics = {k: result.train.get(k) for k in ("loss", "dmc_alpha", "dmc_target", "dmc_loss")}
    summary = {"step": result.step, **metrics, "skipped": result.skipped}
    if result.eval:
        summary["eval"] = result.eval
    if args.json:
        print(json.dumps(summary))
        return 0
    alpha = metrics["dmc_alpha"]
    ratio = "n/a" if alpha is None or alpha >= 1 else f"{1 / (1 - alpha):.2f}x"
    print(
        f"done: DMC model written to {args.out} ({result.step} steps; mean merge rate "
        f"{alpha if alpha is None else round(alpha, 4)}, about {ratio} in training; "
        f"measure it with `jaxprune eval {args.out} --data FILE --json`)"
    )
    return 0


def add_parsers(sub) -> None:
    sp = sub.add_parser("dmc", help="retrofit attention with DMC (learned KV-cache compression)")
    sp.add_argument("model", help="the model to retrofit (native checkpoint, HF dir or preset)")
    sp.add_argument("--teacher", default=None, help="distill from this model (default: MODEL)")
    sp.add_argument(
        "--loss", choices=("kd", "lm"), default="kd", help="kd: distill (default); lm: CE only"
    )
    sp.add_argument("--target-ratio", type=float, default=None, help="tokens per slot (default 4)")
    sp.add_argument("--ramp-fraction", type=float, default=None, help="share of the steps "
                    "over which the target rises from 1 (default 0.75)")  # fmt: skip
    sp.add_argument("--temperature", type=float, default=None, help="Gumbel-sigmoid (0.1)")
    sp.add_argument("--dmc-weight", type=float, default=None, help="compression loss weight (1)")
    sp.add_argument("--blocks", type=_blocks, default=None, help="attention blocks (default all)")
    _common(sp)
    sp.set_defaults(fn=cmd_dmc)
