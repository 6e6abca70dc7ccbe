"""``jaxprune distill`` and ``jaxprune train``: argparse sub-commands over :func:`run`.

    jaxprune distill --teacher T --student S --data FILE [--eval-data FILE] --steps N --out DIR
    jaxprune train (MODEL | --init CONFIG) --data FILE --steps N --out DIR

Common options: --batch-size, --seq-len, --lr, --save-every, --grad-accum, --eval-every,
--mesh D,F,T, --seed, --resume, --gin_file FILE (repeatable), --gin_param BINDING
(repeatable). gin binds ``TrainConfig`` / ``LossConfig`` / ``OptimConfig`` (see
``experiments/configs/*.gin``); explicit flags override gin. When the run finishes OUT is a
native model that every command taking MODEL accepts. Exit status: 0 done, 1 stopped on
non-finite losses, 2 usage / IO errors, 143 preempted by SIGTERM (checkpoint saved; rerun
with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxprune.train.config import LossConfig, OptimConfig, TrainConfig

EXIT_NONFINITE = 1
EXIT_PREEMPTED = 143
_GIN_REGISTERED = False


def train_config_from_gin(files: list[str], params: list[str]) -> TrainConfig:
    """A :class:`TrainConfig` built by gin from ``files`` and ``params`` bindings."""
    return config_from_gin(files, params, TrainConfig)


def config_from_gin(files: list[str], params: list[str], target: type):
    """``target()`` (a config dataclass) built by gin; the trainer's and the compression
    pipeline's dataclasses are configurable as ``jaxprune.<Name>`` / ``<Name>``."""
    import gin

    from jaxprune.pipeline import CompressConfig

    global _GIN_REGISTERED
    if not _GIN_REGISTERED:
        for cls in (TrainConfig, LossConfig, OptimConfig, CompressConfig):
            gin.external_configurable(cls, name=cls.__name__, module="jaxprune")
        _GIN_REGISTERED = True
    gin.clear_config()
    for f in files:
        if not Path(f).is_file():
            raise ValueError(f"gin file not found: {f}")
        gin.add_config_file_search_path(str(Path(f).resolve().parent))  # for `include`
    try:
        gin.parse_config_files_and_bindings(files, params)
        return gin.get_configurable(target)()
    except (ValueError, TypeError, KeyError, SyntaxError) as e:
        raise ValueError(f"gin config: {str(e).strip().splitlines()[0]}") from e


def _mesh(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("--mesh takes three sizes: data,fsdp,tensor (-1 = rest)")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def build_train_config(args: argparse.Namespace, *, distill: bool) -> TrainConfig:
    """gin (if any) <- explicit flags. ``train`` always uses plain cross-entropy."""
    cfg = train_config_from_gin(args.gin_file or [], args.gin_param or [])
    names = ("steps", "batch_size", "seq_len", "save_every", "grad_accum", "eval_every", "seed")
    changes: dict[str, Any] = {k: getattr(args, k) for k in (*names, "mesh") if hasattr(args, k)}
    if args.no_progress:
        changes["progress"] = False
    if hasattr(args, "lr"):
        changes["optim"] = dataclasses.replace(cfg.optim, lr=args.lr)
    if not distill:
        changes["loss"] = LossConfig(kl="none", ce_weight=1.0, chunk=cfg.loss.chunk)
    return cfg.replace(**changes)


def _tokenizer(model_dir: Path | None, data: list[str]):
    """The model's ``tokenizer.json``, loaded only when some data file is not token ids."""
    if all(Path(d).suffix.lower() in (".npy", ".bin") for d in data):
        return None
    from jaxprune.converters.api import model_tokenizer

    return None if model_dir is None else model_tokenizer(model_dir)


def _init_model(spec: str, seed: int):
    from jaxprune.config import ModelConfig
    from jaxprune.nn.model import init_model
    from jaxprune.presets import PRESETS, get_preset

    path = Path(spec)
    if path.is_file():
        try:
            cfg = ModelConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(f"bad model config {path}: {e}") from e
    elif spec in PRESETS:
        cfg = get_preset(spec)
    else:
        raise ValueError(
            f"--init {spec}: neither a config JSON file nor a preset ({', '.join(PRESETS)})"
        )
    return init_model(cfg, seed)


def _run(args: argparse.Namespace, *, distill: bool) -> int:
    from jaxprune.converters.api import load_model
    from jaxprune.data import load_corpus
    from jaxprune.train.trainer import NonFiniteError, run

    cfg = build_train_config(args, distill=distill)
    teacher, source_dir, meta = None, None, {}
    if distill:
        teacher, _ = load_model(args.teacher)
        student, meta = load_model(args.student)
        source_dir = Path(args.student)
    elif args.model:
        student, meta = load_model(args.model)
        source_dir = Path(args.model)
    else:
        student = _init_model(args.init, cfg.seed)
    vocab = student.config.vocab_size
    if teacher is not None and teacher.config.vocab_size != vocab:
        raise ValueError(
            f"teacher vocabulary {teacher.config.vocab_size} differs from the student's {vocab}"
        )
    tok = _tokenizer(source_dir, [args.data] + ([args.eval_data] if args.eval_data else []))
    train_src = load_corpus(args.data, tokenizer=tok, vocab_size=vocab)
    eval_src = (
        load_corpus(args.eval_data, tokenizer=tok, vocab_size=vocab) if args.eval_data else None
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = run(
            cfg,
            student=student,
            teacher=teacher,
            train_source=train_src,
            eval_source=eval_src,
            out=out,
            resume=args.resume,
            family=meta.get("family"),
            hf_config=meta.get("hf_config"),
            aux_dir=source_dir,
        )
    except NonFiniteError as e:
        print(f"jaxprune: stopped: {e}")
        return EXIT_NONFINITE
    if result.status == "preempted":
        print(
            f"preempted at step {result.step}: checkpoint saved in {out / 'checkpoints'}; "
            "rerun with --resume"
        )
        return EXIT_PREEMPTED
    summary = {"step": result.step, "loss": result.train.get("loss"), "skipped": result.skipped}
    if result.eval:
        summary["eval"] = result.eval
    print(json.dumps(summary) if args.json else f"done: {summary}; model written to {out}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    return _run(args, distill=True)


def cmd_train(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.init):
        raise ValueError("train: give exactly one of MODEL or --init CONFIG")
    return _run(args, distill=False)


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--data", required=True, help="training data (.npy, .bin, .jsonl, .txt, dir, glob)"
    )
    sp.add_argument("--eval-data", default=None, help="held-out data for periodic evaluation")
    sp.add_argument(
        "--steps", type=int, default=argparse.SUPPRESS, help="optimizer steps (or set by gin)"
    )
    sp.add_argument("--out", required=True, help="run directory; becomes the trained model")
    sp.add_argument(
        "--batch-size", type=int, default=argparse.SUPPRESS, help="sequences per optimizer step"
    )
    sp.add_argument("--seq-len", type=int, default=argparse.SUPPRESS)
    sp.add_argument("--lr", type=float, default=argparse.SUPPRESS, help="peak learning rate")
    sp.add_argument(
        "--save-every", type=int, default=argparse.SUPPRESS, help="checkpoint every N steps"
    )
    sp.add_argument(
        "--grad-accum", type=int, default=argparse.SUPPRESS, help="micro-batches per step"
    )
    sp.add_argument(
        "--eval-every", type=int, default=argparse.SUPPRESS, help="evaluate every N steps"
    )
    sp.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    sp.add_argument(
        "--mesh", type=_mesh, default=argparse.SUPPRESS, help="data,fsdp,tensor sizes, e.g. -1,1,1"
    )
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
