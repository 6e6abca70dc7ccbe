"""``jaxprune distill`` and ``jaxprune train``: thin commands over :func:`jaxprune.train.run`.

    jaxprune distill --teacher T --student S --data FILE [--eval-data FILE] --steps N --out DIR
    jaxprune train (MODEL | --init CONFIG) --data FILE --steps N --out DIR

The run's flags (--steps, --batch-size, --seq-len, --save-every, --grad-accum, --eval-every,
--seed, --mesh, --remat; --lr for ``OptimConfig.lr``) are fields of ``TrainConfig`` (checked by a
test); --gin_file FILE / --gin_param BINDING (repeatable) bind ``TrainConfig`` /
``LossConfig`` / ``OptimConfig`` (see ``experiments/configs/*.gin``); explicit flags
override gin. When the run finishes OUT is a native model that every command taking MODEL
accepts. Exit status: 0 done, 1 stopped on non-finite losses, 2 bad input, 143 preempted by
SIGTERM (checkpoint saved; rerun with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxprune.cli import EXIT_NONFINITE, EXIT_PREEMPTED
from jaxprune.cli.gin import train_config_from_gin
from jaxprune.errors import UserError
from jaxprune.train.config import REMAT, LossConfig, OptimConfig, TrainConfig

#: TrainConfig fields that have their own flag (everything else: gin).
RUN_FLAGS = ("steps", "batch_size", "seq_len", "save_every", "grad_accum", "eval_every", "seed")
_HELP = {
    "steps": "optimizer steps",
    "batch_size": "sequences per optimizer step",
    "seq_len": "tokens per sequence",
    "save_every": "checkpoint every N steps",
    "grad_accum": "micro-batches per step",
    "eval_every": "evaluate every N steps (0: never)",
    "seed": "seed of the data order (and of --init weights)",
}


def _mesh(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) != 3:
        raise argparse.ArgumentTypeError(
            f"--mesh takes three integer sizes data,fsdp,tensor (-1 = rest), got {text!r}"
        )
    return sizes  # type: ignore[return-value]


def build_train_config(
    args: argparse.Namespace, *, distill: bool, base: TrainConfig | None = None
) -> TrainConfig:
    """gin (if any; or ``base``, a gin-built config) <- explicit flags. ``train`` always
    uses plain cross-entropy."""
    cfg = base or train_config_from_gin(args.gin_file or [], args.gin_param or [])
    changes: dict[str, Any] = {
        k: getattr(args, k) for k in (*RUN_FLAGS, "mesh", "remat") if hasattr(args, k)
    }
    if args.no_progress:
        changes["progress"] = False
    if hasattr(args, "lr"):
        changes["optim"] = dataclasses.replace(cfg.optim, lr=args.lr)
    if not distill:
        changes["loss"] = LossConfig(kl="none", ce_weight=1.0, chunk=cfg.loss.chunk)
    return cfg.replace(**changes)


def _needs_tokenizer(data: list[str]) -> bool:
    return not all(Path(d).suffix.lower() in (".npy", ".bin") for d in data)


def _init_spec(spec: str) -> str:
    """``--init``: a config JSON file or a preset name (random weights)."""
    from jaxprune.presets import PRESETS

    if not (Path(spec).is_file() or spec in PRESETS):
        raise UserError(
            f"--init {spec}: neither a config JSON file nor a preset ({', '.join(PRESETS)})"
        )
    return spec


def _run(args: argparse.Namespace, *, distill: bool) -> int:
    from jaxprune.data import load_corpus
    from jaxprune.data.pipeline import check_one_batch
    from jaxprune.models import resolve_model
    from jaxprune.train.trainer import run

    cfg = build_train_config(args, distill=distill)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a run directory")
    data = [args.data] + ([args.eval_data] if args.eval_data else [])
    text = _needs_tokenizer(data)  # token-id data needs no tokenizer (nor a valid one)
    teacher = None
    if distill:
        teacher = resolve_model(args.teacher, with_tokenizer=False).model
        src = resolve_model(args.student, tokenizer=args.tokenizer, with_tokenizer=text)
    else:
        spec = args.model or _init_spec(args.init)
        src = resolve_model(spec, seed=cfg.seed, tokenizer=args.tokenizer, with_tokenizer=text)
    student = src.model
    vocab = student.config.vocab_size
    if teacher is not None and teacher.config.vocab_size != vocab:
        raise UserError(
            f"teacher vocabulary {teacher.config.vocab_size} differs from the student's {vocab}"
        )
    tok = src.tokenizer
    train_src = load_corpus(args.data, tokenizer=tok, vocab_size=vocab)
    eval_src = (
        load_corpus(args.eval_data, tokenizer=tok, vocab_size=vocab) if args.eval_data else None
    )
    check_one_batch(
        train_src, batch_size=cfg.batch_size, seq_len=cfg.seq_len, what=f"data {args.data!r}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"compiling the {'distillation' if distill else 'training'} step "
        "(the first step takes longest)...",
        file=sys.stderr,
        flush=True,
    )
    result, status = guarded(
        lambda: run(
            cfg,
            student=student,
            teacher=teacher,
            train_source=train_src,
            eval_source=eval_src,
            out=out,
            resume=args.resume,
            family=src.family,
            hf_config=src.hf_config,
            aux_dir=src.source,
        ),
        out,
    )
    if status is not None:
        return status
    summary = {"step": result.step, "loss": result.train.get("loss"), "skipped": result.skipped}
    if result.eval:
        summary["eval"] = result.eval
    print(json.dumps(summary) if args.json else summary_table(summary, out))
    return 0


def guarded(train: Callable[[], Any], out: Path) -> tuple[Any, int | None]:
    """Run ``train()`` (a training call returning a RunResult): (result, None) when it
    finished, else (result or None, the exit status) after saying why it stopped."""
    from jaxprune.train.trainer import NonFiniteError

    try:
        result = train()
    except NonFiniteError as e:
        print(f"jaxprune: stopped: {e}")
        return None, EXIT_NONFINITE
    if result.status == "preempted":
        print(
            f"preempted at step {result.step}: checkpoint saved in {Path(out) / 'checkpoints'}; "
            "rerun with --resume"
        )
        return result, EXIT_PREEMPTED
    return result, None


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not (v.is_integer() and abs(v) >= 1):
        return f"{v:.4f}"
    return f"{int(v):,}" if isinstance(v, float) else str(v)


def summary_table(summary: dict, out: Path) -> str:
    """The end-of-run summary as a two-column table (``--json``: one JSON object)."""
    rows = [("steps", summary["step"]), ("train loss", summary["loss"])]
    rows += [(f"eval {k}", v) for k, v in (summary.get("eval") or {}).items()]
    rows.append(("skipped steps", summary["skipped"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"done: model written to {out}"]
    for k, v in rows:
        lines.append(f"  {k:<{width}}  {_cell(v):>10}")
    return "\n".join(lines)


def cmd_distill(args: argparse.Namespace) -> int:
    return _run(args, distill=True)


def cmd_train(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.init):
        raise UserError("train: give exactly one of MODEL or --init CONFIG")
    return _run(args, distill=False)


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--data", required=True, help="training data (.npy, .bin, .jsonl, .txt, dir, glob)"
    )
    sp.add_argument("--eval-data", default=None, help="held-out data for periodic evaluation")
    sp.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the model's)")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in RUN_FLAGS:
        sp.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=argparse.SUPPRESS,
            help=f"{_HELP[name]} (TrainConfig.{name}; default {defaults[name]} or gin's)",
        )
    sp.add_argument(
        "--lr",
        type=float,
        default=argparse.SUPPRESS,
        help=f"peak learning rate (OptimConfig.lr; default {OptimConfig().lr} or gin's)",
    )
    sp.add_argument(
        "--mesh", type=_mesh, default=argparse.SUPPRESS, help="data,fsdp,tensor sizes, e.g. -1,1,1"
    )
    sp.add_argument(
        "--remat",
        choices=REMAT,
        default=argparse.SUPPRESS,
        help="block: recompute each block in the backward, keeping only its input "
        "(TrainConfig.remat; default none or gin's)",
    )
    sp.add_argument("--out", required=True, help="run directory; becomes the trained model")
    sp.add_argument("--resume", action="store_true", help="continue from OUT's newest checkpoint")
    sp.add_argument("--gin_file", "--gin-file", action="append", default=[], help="gin config file")
    sp.add_argument("--gin_param", "--gin-param", action="append", default=[], help="gin binding")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def add_parsers(subparsers: Any) -> None:
    """Register ``distill`` and ``train`` on an argparse sub-parsers object."""
    sp = subparsers.add_parser(
        "distill", help="knowledge distillation from a teacher into a student"
    )
    sp.add_argument("--teacher", required=True, help="teacher model (native checkpoint or HF dir)")
    sp.add_argument("--student", required=True, help="student model (native checkpoint or HF dir)")
    _common(sp)
    sp.set_defaults(fn=cmd_distill)

    sp = subparsers.add_parser("train", help="plain language-model training (cross-entropy)")
    sp.add_argument("model", nargs="?", default=None, help="model to start from")
    sp.add_argument("--init", default=None, help="fresh model: a config JSON or a preset name")
    _common(sp)
    sp.set_defaults(fn=cmd_train)
