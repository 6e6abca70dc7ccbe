"""A short distillation for re-ranking search candidates (post-KD ranks can flip)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from jaxprune.converters.native import load_native
from jaxprune.data import Corpus
from jaxprune.nn.model import HybridLM
from jaxprune.train import LossConfig, OptimConfig, TrainConfig, run


def make_short_distill(
    teacher: HybridLM,
    rows: np.ndarray,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
) -> Callable[[HybridLM], HybridLM]:
    """``fn(student) -> student`` distilled from ``teacher`` for ``steps`` steps (forward KL,
    fp32) on ``rows`` (N, T) token ids, every candidate on the same tokens and seed."""
    corpus = Corpus(
        [np.asarray(rows, np.int32).reshape(-1)],
        np.arange(0, rows.size, rows.shape[1], dtype=np.int64),
    )
    mesh = (math.gcd(batch_size, jax.device_count()), 1, 1)
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        seq_len=rows.shape[1] - 1,
        compute_dtype="float32",
        teacher_dtype="float32",
        loss=LossConfig(kl="forward"),
        optim=OptimConfig(lr=lr, warmup_steps=max(1, steps // 10)),
        save_every=steps,
        keep=1,
        async_save=False,
        progress=False,
        mesh=mesh,
    )

    def distill(student: HybridLM) -> HybridLM:
        with tempfile.TemporaryDirectory() as tmp:
            run(cfg, student=student, teacher=teacher, train_source=corpus, out=Path(tmp) / "run")
            return load_native(Path(tmp) / "run")[0]

    return distill
