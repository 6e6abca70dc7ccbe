"""Checks ``compress`` runs before any work: targets, a search budget some candidate can
meet, and data large enough for the stages that read it. Each failure is one UserError."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxprune.config import ModelConfig
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.pruning.targets import validate_targets

if TYPE_CHECKING:
    from jaxprune.search.run import SearchConfig


def check_targets(cfg: ModelConfig, targets: dict) -> None:
    """The ``prune`` command's validation, with the ``compress:`` prefix."""
    try:
        validate_targets(cfg, targets)
    except UserError as e:
        raise UserError(f"compress: targets: {e}") from e


def check_budget(cfg: ModelConfig, search: SearchConfig) -> None:
    """UserError when not even the smallest candidate of the search space can fit the
    budget: every axis at its narrowest and the dearest layers dropped (a lower bound on
    every candidate, so a budget that passes may still fail later, never the reverse)."""
    from jaxprune.search.space import lower_bound, memory_bytes, smallest_candidate

    budget = search.budget
    metric = "active" if budget.active else "total"
    limit = budget.limit(cfg)
    lo, small, keep = smallest_candidate(cfg, search.space)
    desc = ", ".join(f"{k}={v}" for k, v in lo.items())
    least = lower_bound(small, keep, lambda c: count_params(c)[metric])
    limits = (
        f"max_prune={search.max_prune} (the largest cut per axis) and divisor={search.divisor} "
        "(widths are multiples of it)"
    )
    if least > limit:
        raise UserError(
            f"compress: no candidate can fit the budget of {limit:,.0f} {metric} params: the "
            f"smallest candidate ({desc}) has {least:,.0f}; raise SearchConfig.params, or "
            f"widen the space ({limits})"
        )
    if budget.memory_gb is not None:

        def mem(c: ModelConfig) -> int:
            return memory_bytes(c, batch=budget.batch, context=budget.context)["total"]

        least_mem = lower_bound(small, keep, mem)
        if least_mem > budget.memory_gb * 1e9:
            raise UserError(
                f"compress: no candidate can fit memory_gb={budget.memory_gb}: the smallest "
                f"candidate ({desc}) needs {least_mem / 1e9:.3g} GB at batch {budget.batch} x "
                f"context {budget.context}; raise memory_gb, or widen the space ({limits})"
            )
