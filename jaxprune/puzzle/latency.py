"""Measured decode latency per variant, for Puzzle's latency budget.

A block's marginal cost is measured, not modelled: the decode step of a model made of
``1 + k`` copies of the variant's layer minus that of one copy, divided by ``k``
(:func:`jaxprune.search.search.decode_ms`, a jitted batch-1 step after a prefill). The
intercept (embeddings, final norm, LM head, dispatch) is shared by every choice.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprune.config import ModelConfig
from jaxprune.nn.model import init_model
from jaxprune.puzzle.library import Variant
from jaxprune.search.search import decode_ms


def _time(cfg: ModelConfig, layers: tuple, context: int, reps: int) -> float:
    return decode_ms(init_model(dataclasses.replace(cfg, layers=layers), 0), context, reps)


def latency_costs(
    cfg: ModelConfig,
    library: list[list[Variant]],
    *,
    context: int = 64,
    copies: int = 4,
    reps: int = 9,
) -> tuple[list[np.ndarray], float]:
    """(per block, (n_variants,) marginal decode ms; the shared ms). Removed blocks cost 0;
    each distinct layer config is timed once. Marginals are clipped at 0 (timer noise)."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    marginal: dict = {}
    intercepts = []
    for row in library:
        for v in row:
            if v.removed or v.layer in marginal:
                continue
            one = _time(cfg, (v.layer,), context, reps)
            many = _time(cfg, (v.layer,) * (1 + copies), context, reps)
            marginal[v.layer] = max(0.0, (many - one) / copies)
            intercepts.append(one - marginal[v.layer])
    costs = [np.array([0.0 if v.removed else marginal[v.layer] for v in row]) for row in library]
    return costs, float(max(0.0, np.median(intercepts)))
