"""``jaxprune demo``: the whole recipe in miniature on a corpus every machine has.

Trains a small Nemotron-H-style hybrid teacher on the Python standard library's own source
(held-out modules for evaluation; a byte-level BPE tokenizer trained on the training files),
prunes it about 2x with group-aware activation importance, distills the student from the
teacher, trains the same student architecture from scratch on the same number of tokens,
and prints a table: parameters, held-out loss / perplexity and decode tokens/s. Nothing is
downloaded. The teacher is cached (keyed by the demo config) and reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jaxprune.atomic import atomic_output_dir
from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig
from jaxprune.converters.native import load_native, save_model
from jaxprune.counts import count_params
from jaxprune.data import corpus_rows, load_corpus
from jaxprune.evaluation import evaluate_lm_loss
from jaxprune.nn.model import init_model
from jaxprune.pruning.prune import prune
from jaxprune.pruning.scoring import score_model
from jaxprune.small_lm import (
    decode_tps,
    small_train_config,
    stdlib_split,
    train_small,
    train_tokenizer,
)
from jaxprune.tokenizer import model_tokenizer


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budgets; the defaults finish in about ten minutes on a 2-core CPU."""

    vocab_size: int = 2048
    hidden: int = 256
    pattern: str = "M-M*-M-M*-"
    seq_len: int = 256
    batch_size: int = 8
    teacher_steps: int = 400
    student_steps: int = 200
    lr: float = 2e-3
    train_mb: float = 4.0
    eval_rows: int = 48
    calib_rows: int = 64
    targets: tuple[tuple[str, int], ...] = (
        ("hidden_size", 160),
        ("intermediate_size", 384),
        ("mamba_num_heads", 4),
    )
    seed: int = 0

    def teacher(self) -> ModelConfig:
        return ModelConfig.from_pattern(
            self.pattern,
            vocab_size=self.vocab_size,
            hidden=self.hidden,
            mamba=Mamba2Config(num_heads=8, head_dim=32, state=32, n_groups=2, chunk_size=64),
            attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=64),
            mlp=MLPConfig(intermediate=768),
            name="demo-teacher",
        )

    def digest(self) -> str:
        keep = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("student_steps", "targets", "eval_rows", "calib_rows")
        }
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


TINY = DemoConfig(
    vocab_size=512,
    hidden=64,
    pattern="M-*-",
    seq_len=64,
    batch_size=4,
    teacher_steps=20,
    student_steps=10,
    train_mb=0.3,
    eval_rows=8,
    calib_rows=8,
    targets=(("hidden_size", 48), ("intermediate_size", 384), ("mamba_num_heads", 4)),
)


def _train(cfg: DemoConfig, model, corpus, out: Path, steps: int, teacher=None):
    tc = small_train_config(
        steps,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        lr=cfg.lr,
        seed=cfg.seed,
        distill=teacher is not None,
    )
    tc = dataclasses.replace(tc, save_every=steps)
    shutil.rmtree(out, ignore_errors=True)  # the demo's own scratch output from a past run
    return train_small(tc, model, corpus, out, teacher)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxprune" / "demo"


def run_demo(cfg: DemoConfig = DemoConfig(), *, out: Path, cache: Path | None = None) -> dict:
    """Run everything; returns the report rows and writes ``out/report.{md,json}``."""
    out.mkdir(parents=True, exist_ok=True)
    train_files, held = stdlib_split(cfg.train_mb)
    teacher_dir = (cache or cache_root()) / cfg.digest()
    if not (teacher_dir / "jaxprune.json").is_file():
        with atomic_output_dir(teacher_dir) as new_dir, tempfile.TemporaryDirectory() as scratch:
            print(f"training the tokenizer and the teacher ({cfg.teacher_steps} steps) ...")
            tok = train_tokenizer(train_files, cfg.vocab_size, Path(scratch))
            corpus = load_corpus(
                train_files, tokenizer=tok, vocab_size=cfg.vocab_size, text_suffixes=(".py",)
            )
            _train(cfg, init_model(cfg.teacher(), cfg.seed), corpus, new_dir, cfg.teacher_steps)
            shutil.copy(Path(scratch) / "tokenizer.json", new_dir / "tokenizer.json")
            shutil.rmtree(new_dir / "checkpoints", ignore_errors=True)
    else:
        print(f"reusing the cached teacher {teacher_dir}")
    tok = model_tokenizer(teacher_dir)
    teacher, _ = load_native(teacher_dir)
    corpus = load_corpus(
        train_files, tokenizer=tok, vocab_size=cfg.vocab_size, text_suffixes=(".py",)
    )
    held_corpus = load_corpus(
        held, tokenizer=tok, vocab_size=cfg.vocab_size, text_suffixes=(".py",)
    )
    rows = corpus_rows(held_corpus, seq_len=cfg.seq_len, max_rows=cfg.eval_rows)
    calib_rows = corpus_rows(corpus, seq_len=cfg.seq_len, max_rows=cfg.calib_rows)
    print("calibrating and pruning ...")
    sc = score_model(teacher, calib_rows, batch_size=8).scores
    pruned = prune(teacher, sc, dict(cfg.targets))
    print(f"distilling the student ({cfg.student_steps} steps) ...")
    distilled = _train(cfg, pruned, corpus, out / "distilled", cfg.student_steps, teacher)
    print("training the same student architecture from scratch ...")
    scratch = _train(
        cfg, init_model(pruned.config, cfg.seed + 1), corpus, out / "scratch", cfg.student_steps
    )
    report = []
    for name, m in (
        ("teacher", teacher),
        ("pruned, before distillation", pruned),
        ("pruned + distilled", distilled),
        ("same student, from scratch", scratch),
    ):
        ev = evaluate_lm_loss(m, rows, batch_size=8)
        report.append(
            {
                "model": name,
                "params": count_params(m.config)["total"],
                "loss": ev["loss"],
                "ppl": ev["ppl"],
                "decode_tok_s": decode_tps(m),
            }
        )
    save_model(_fresh(out / "student"), distilled)
    shutil.copy(teacher_dir / "tokenizer.json", out / "student" / "tokenizer.json")
    md = _table(report, cfg)
    (out / "report.md").write_text(md)
    (out / "report.json").write_text(
        json.dumps({"config": dataclasses.asdict(cfg), "rows": report}, indent=2)
    )
    print(md)
    return {"rows": report, "teacher_dir": str(teacher_dir)}


def _fresh(p: Path) -> Path:
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True)
    return p


def _table(rows: list[dict], cfg: DemoConfig) -> str:
    tokens = cfg.student_steps * cfg.batch_size * cfg.seq_len
    lines = ["| model | params | held-out loss | ppl | decode tok/s |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['model']} | {r['params']:,} | {r['loss']:.3f} | {r['ppl']:.1f} | "
        f"{r['decode_tok_s']:,.0f} |"
        for r in rows
    ]
    lines.append(
        f"\nStudent runs: {cfg.student_steps} steps = {tokens:,} tokens each; teacher "
        f"{cfg.teacher_steps} steps. Held-out: stdlib modules not trained on."
    )
    return "\n".join(lines) + "\n"
