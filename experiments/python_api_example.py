"""The Python API on a tiny preset: load -> importance -> prune -> search -> distill ->
evaluate -> export, then the same in one ``jaxprune.compress`` call (docs/python_api.md).

    python experiments/python_api_example.py [OUT_DIR]

Random token ids stand in for a corpus (48 training rows, 16 held out), so the losses show
the mechanics, not quality. Everything is written under OUT_DIR (default: a temporary
directory, removed at the end).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import jaxprune
from jaxprune.search.run import SearchConfig
from jaxprune.train import TrainConfig

PRESET = "tiny-llama"
TARGETS = {"intermediate_size": 96, "num_attention_heads": 2, "drop_layers": [3]}
SEQ = 32
TRAIN = {
    "steps": 4,
    "batch_size": 4,
    "seq_len": SEQ,
    "compute_dtype": "float32",
    "teacher_dtype": "float32",
    "mesh": (1, 1, 1),
    "progress": False,
}


def token_ids(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) int token ids, 48 and 16 rows of SEQ + 1 tokens."""
    ids = np.random.default_rng(seed).integers(1, 256, size=(64, SEQ + 1))
    return ids[:48], ids[48:]


def step_by_step(out: Path) -> dict:
    """Each library function in turn; returns {stage: value} for the checks."""
    train, held_out = token_ids()
    src = jaxprune.resolve_model(PRESET)
    teacher = src.model
    scores = jaxprune.score_model(teacher, train[:16, :SEQ], batch_size=8)
    pruned = jaxprune.prune(teacher, scores.scores, TARGETS)
    cfg = SearchConfig(params=0.75, divisor=16, top_k=2, eval_samples=8)
    found = jaxprune.run_search(
        teacher, scores.scores, held_out[:8, :SEQ], cfg.budget, cfg.space, cfg.top_k,
        batch_size=8,
    )  # fmt: skip
    run = jaxprune.distill(
        TrainConfig.from_dict(TRAIN), student=pruned, teacher=teacher,
        train_source=jaxprune.as_corpus(train), out=out / "student",
    )  # fmt: skip
    student, _ = jaxprune.load_model(out / "student")
    losses = {
        name: jaxprune.evaluate_lm_loss(m, held_out[:, :SEQ], batch_size=8)["loss"]
        for name, m in (("teacher", teacher), ("pruned", pruned), ("distilled", student))
    }
    hf = jaxprune.export(student, out / "hf", model_type="llama")
    return {
        "teacher": teacher,
        "pruned": pruned,
        "student": student,
        "search": found,
        "run": run,
        "losses": losses,
        "hf": hf,
    }


def one_call(out: Path | None = None) -> jaxprune.CompressResult:
    """The whole pipeline as one ``jaxprune.compress`` call on in-memory token ids."""
    train, held_out = token_ids()
    return jaxprune.compress(
        PRESET,
        train,
        targets=TARGETS,
        eval_data=held_out,
        out=out,
        calibration={"samples": 16, "seq_len": SEQ},
        distill=TRAIN,
        eval_rows=8,
    )


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", help="output directory (default: a temporary one)")
    out = ap.parse_args(argv).out
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out) if out else Path(tmp)
        t0 = time.perf_counter()
        steps = step_by_step(root / "steps")
        print("step by step:", {k: round(v, 4) for k, v in steps["losses"].items()})
        print("search chose", steps["search"].best.targets, "| HF export:", steps["hf"])
        result = one_call(root / "compress" if out else None)
        print("compress:", result.targets, [(r["model"], r["params"]) for r in result.rows])
        print(f"done in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
