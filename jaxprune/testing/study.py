"""Inputs of the ablation study's tests: a tiny native hybrid teacher (n_groups > 1) and a
token-id corpus with some structure, so the study runs end to end in well under a minute."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprune.converters.native import save_model
from jaxprune.nn.model import init_model
from jaxprune.study.config import TINY


def tiny_study_inputs(root: Path, tokens: int = 20_000) -> tuple[Path, Path]:
    """(teacher directory, data .npy) under ``root``: the TINY study teacher with random
    weights, and a periodic token stream with noise (ids < the teacher's vocabulary)."""
    teacher = Path(root) / "teacher"
    save_model(teacher, init_model(TINY.teacher(), 0))
    rng = np.random.default_rng(0)
    ids = (np.arange(tokens) * 7 + rng.integers(0, 3, tokens)) % 256
    data = Path(root) / "data.npy"
    np.save(data, ids.astype(np.int32))
    return teacher, data
