"""Budgeted search: enumerate targets, filter by analytic params / memory, prune the top-k
from saved scores, score them zero-shot by LM loss (and optionally after a short
distillation), pick the best, and report with a Pareto plot."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.evaluation import evaluate_lm_loss
from jaxprune.nn.model import HybridLM
from jaxprune.pruning.prune import prune
from jaxprune.search.budget import describe
from jaxprune.search.space import SearchSpace, candidates, memory_bytes


@dataclass(frozen=True)
class Budget:
    """``params``: <= 1 is a fraction of the source's, else an absolute count; ``active``
    budgets active (per-token) parameters; ``memory_gb`` caps weights + caches at
    ``batch`` x ``context``."""

    params: float
    active: bool = False
    memory_gb: float | None = None
    batch: int = 1
    context: int = 4096

    def limit(self, cfg) -> float:
        """The parameter limit for source ``cfg`` (total, or active with ``active``)."""
        src = count_params(cfg)["active" if self.active else "total"]
        return self.params * (src if self.params <= 1 else 1)


@dataclass
class Candidate:
    targets: dict
    params: int
    active: int
    memory: int
    loss: float | None = None
    distilled_loss: float | None = None
    decode_ms: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return self.loss if self.distilled_loss is None else self.distilled_loss


def shortlist(
    model: HybridLM,
    scores: dict,
    budget: Budget,
    space: SearchSpace,
    top_k: int,
    depth: str = "depth_block_influence",
) -> list[Candidate]:
    """The ``top_k`` feasible candidates with the most parameters (closest to the budget),
    one per architecture (targets that shrink to the same config are one candidate);
    ``depth``: the ranking the depth axes drop blocks by.

    Refuses a parameter budget at or above the source's size when no memory budget is
    given (the "best" candidate would be the unpruned model) and, when nothing fits,
    names the smallest candidate and the settings that bound it."""
    key = "active" if budget.active else "total"
    limit = check_budget(model.config, budget)
    feasible: dict = {}
    smallest = (math.inf, math.inf)
    for targets, small in candidates(model.config, scores, space, depth):
        c = count_params(small)
        mem = memory_bytes(small, batch=budget.batch, context=budget.context)["total"]
        smallest = (min(smallest[0], c[key]), min(smallest[1], mem))
        if c[key] > limit:
            continue
        if budget.memory_gb is not None and mem > budget.memory_gb * 1e9:
            continue
        feasible.setdefault(small, Candidate(targets, c["total"], c["active"], mem))
    if not feasible:
        raise UserError(_nothing_fits(limit, key, budget, space, smallest))
    attr = "active" if budget.active else "params"
    ranked = sorted(feasible.values(), key=lambda c: getattr(c, attr), reverse=True)
    return ranked[:top_k]


def check_budget(cfg, budget: Budget) -> float:
    """The parameter limit of ``budget`` for source ``cfg``; refuses a budget that admits
    the unpruned model (it would be chosen as best). Cheap: call it before calibrating."""
    key = "active" if budget.active else "total"
    src = count_params(cfg)[key]
    limit = budget.limit(cfg)
    if _fits(cfg, src, limit, budget):
        raise UserError(
            f"search: the budget ({describe(budget.params)}, {limit:,.0f} {key} params"
            + (f", {budget.memory_gb} GB" if budget.memory_gb else "")
            + f") admits the unpruned model ({src:,} {key} params), which would be chosen as "
            "best; give a smaller --params (e.g. 0.6, or a count below the source's)"
        )
    return limit


def _fits(cfg, count: int, limit: float, budget: Budget) -> bool:
    if count > limit:
        return False
    if budget.memory_gb is None:
        return True
    mem = memory_bytes(cfg, batch=budget.batch, context=budget.context)["total"]
    return mem <= budget.memory_gb * 1e9


def _nothing_fits(
    limit: float, key: str, budget: Budget, space: SearchSpace, smallest: tuple[float, float]
) -> str:
    bounds = f"--max-prune {space.max_prune} and --divisor {space.divisor}"
    fix = "raise --max-prune (below 1) or lower --divisor"
    if smallest[0] > limit:
        return (
            f"no candidate fits the budget ({limit:,.0f} {key} params): the smallest candidate "
            f"has {smallest[0]:,.0f}, bounded by {bounds}; {fix}, or raise --params"
        )
    return (
        f"no candidate fits the budget ({limit:,.0f} {key} params, {budget.memory_gb} GB at "
        f"batch {budget.batch} x context {budget.context}): the smallest candidate needs "
        f"{smallest[1] / 1e9:.3g} GB, bounded by {bounds}; raise --memory-gb, or {fix}"
    )


def decode_ms(model: HybridLM, context: int = 64, reps: int = 5) -> float:
    """Median wall time of one jitted decode step (batch 1) after a ``context`` prefill."""
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda s, t, c: nnx.merge(graphdef, s).step(t, c))
    cache = model.init_cache(1, context + reps + 2)
    _, cache = step(state, jnp.zeros((1, context), jnp.int32), cache)
    tok = jnp.zeros((1, 1), jnp.int32)
    jax.block_until_ready(step(state, tok, cache))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        logits, cache = step(state, tok, cache)
        jax.block_until_ready(logits)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def evaluate(
    model: HybridLM,
    scores: dict,
    cands: list[Candidate],
    rows: np.ndarray,
    *,
    distill: Callable[[HybridLM], HybridLM] | None = None,
    batch_size: int = 8,
    depth: str = "depth_block_influence",
    mamba_grouping: str = "aware",
    progress: Callable[[int, int, Candidate], None] | None = None,
) -> list[Candidate]:
    """Prune each candidate (``mamba_grouping``: see ``pruning.prune.plan``), measure LM
    loss (and after ``distill``) and decode latency; ``progress(i, n, candidate)`` is
    called after each one is scored (i from 1)."""
    for i, c in enumerate(cands, 1):
        small = prune(model, scores, c.targets, depth, mamba_grouping)
        c.loss = evaluate_lm_loss(small, rows, batch_size=batch_size)["loss"]
        if distill is not None:
            c.distilled_loss = evaluate_lm_loss(distill(small), rows, batch_size=batch_size)["loss"]
        c.decode_ms = decode_ms(small)
        if progress is not None:
            progress(i, len(cands), c)
    return cands


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """True where no other point is <= in both coordinates and < in one (minimize both)."""
    out = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 <= y and (x2 < x or y2 < y))
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        out.append(not dominated)
    return out
