"""Extraction: each budget's child from the router's most likely choices.

Budgets are handled from the largest down. The full budget keeps everything. Every other
budget takes the router's argmax per row, raised where needed to at least the choice of
the next larger child (larger index = fewer units), so that each child's tensors are prefix
slices of the next larger child's. If that child then misses its target (a parameter count,
or inference bytes) by more than ``tol``, single-row moves of one choice step (within the
same nesting bounds) are applied greedily while they bring it closer, least confident rows
winning ties; the
result records how many moves were made, so an undertrained router shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprune.counts import count_params
from jaxprune.elastic.space import ElasticSpace
from jaxprune.nn.model import HybridLM
from jaxprune.pruning.materialize import materialize, shrink_config


def child_params(space: ElasticSpace, choices: dict) -> int:
    return count_params(shrink_config(space.config, space.kept(choices)))["total"]


def _margins(logits: np.ndarray) -> np.ndarray:
    """(rows,) gap between the best and second-best logit (small = unsure)."""
    s = np.sort(logits, axis=-1)
    return s[:, -1] - s[:, -2] if s.shape[-1] > 1 else np.full(len(s), np.inf)


def child_memory(space: ElasticSpace, choices: dict, memory) -> int:
    """Inference bytes of the child (``memory``: a :class:`jaxprune.elastic.budget.Memory`)."""
    from jaxprune.search.space import memory_bytes

    cfg = shrink_config(space.config, space.kept(choices))
    m = memory
    return memory_bytes(
        cfg, batch=m.batch, context=m.context, weight_bytes=m.weight_bytes,
        cache_bytes=m.cache_bytes,
    )["total"]  # fmt: skip


def choose(
    space: ElasticSpace,
    logits: Sequence[dict],
    targets: Sequence[float],
    tol: float = 0.03,
    memory=None,
) -> list[dict]:
    """Per budget (``targets``: parameter counts, or inference bytes with ``memory``; any
    order; ``logits``: the router's {axis: (rows, K)} for each): {"choices": {axis: [int]},
    "params": n, "cost": the budgeted quantity, "moves": m}."""

    def cost(ch):
        return child_params(space, ch) if memory is None else child_memory(space, ch, memory)

    full = cost({a.name: np.zeros(len(a.rows), int) for a in space.axes})
    order = np.argsort(-np.asarray(targets, float), kind="stable")
    out: list[dict] = [{}] * len(targets)
    floor = {a.name: np.zeros(len(a.rows), int) for a in space.axes}
    for j in order:
        target = float(targets[j])
        if target >= full:
            ch = {k: v.copy() for k, v in floor.items()}
            out[j] = _record(space, ch, cost(ch), 0)
            continue
        lg = {k: np.asarray(v, np.float64) for k, v in logits[j].items()}
        ch = {a.name: np.maximum(np.argmax(lg[a.name], -1), floor[a.name]) for a in space.axes}
        n, moves = cost(ch), 0
        while abs(n - target) > tol * target:
            best = None
            for a in space.axes:
                margin = _margins(lg[a.name])
                for r in range(len(a.rows)):
                    for step in (-1, 1):
                        c = ch[a.name][r] + step
                        if c < floor[a.name][r] or c >= a.n_choices:
                            continue
                        trial = {k: v.copy() for k, v in ch.items()}
                        trial[a.name][r] = c
                        m = cost(trial)
                        key = (abs(m - target), margin[r])
                        if abs(m - target) < abs(n - target) and (best is None or key < best[0]):
                            best = (key, trial, m)
            if best is None:
                break
            _, ch, n = best
            moves += 1
        out[j] = _record(space, ch, n, moves)
        floor = ch
    return out


def _record(space: ElasticSpace, ch: dict, cost: float, moves: int) -> dict:
    return {"choices": _lists(ch), "params": child_params(space, ch), "cost": cost, "moves": moves}


def _lists(choices: dict) -> dict[str, list[int]]:
    return {k: [int(x) for x in np.asarray(v).reshape(-1)] for k, v in choices.items()}


def extract(parent: HybridLM, space: ElasticSpace, choices: dict) -> HybridLM:
    """The child of ``choices``: prefix slices of the permuted ``parent`` (an ordinary
    model; save it with ``jaxprune.converters.native.save_model``)."""
    return materialize(parent, space.kept(choices))
