"""Checks ``compress`` runs before any work: targets, a search budget some candidate can
meet, and data large enough for the stages that read it. Each failure is one UserError."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.pruning.targets import decoder_layers, validate_targets

if TYPE_CHECKING:
    from jaxprune.search.run import SearchConfig


def check_targets(cfg: ModelConfig, targets: dict) -> None:
    """The ``prune`` command's validation, with the ``compress:`` prefix."""
    try:
        validate_targets(cfg, targets)
    except UserError as e:
        raise UserError(f"compress: targets: {e}") from e


def smallest_candidate(cfg: ModelConfig, search: SearchConfig) -> tuple[dict, ModelConfig, int]:
    """(the narrowest value of every axis, the config with those widths and every block,
    the fewest layers (HF numbering) the search may keep)."""
    from jaxprune.search.space import axis_choices

    lo = {k: min(v) for k, v in axis_choices(cfg, search.space).items()}
    layers = []
    for layer in cfg.layers:
        if isinstance(layer, MLPConfig) and "intermediate_size" in lo:
            layer = dataclasses.replace(layer, intermediate=lo["intermediate_size"])
        elif isinstance(layer, AttentionConfig) and "num_attention_heads" in lo:
            layer = dataclasses.replace(layer, num_heads=lo["num_attention_heads"])
        elif isinstance(layer, Mamba2Config):
            layer = dataclasses.replace(
                layer,
                num_heads=lo.get("mamba_num_heads", layer.num_heads),
                head_dim=lo.get("mamba_head_dim", layer.head_dim),
            )
        elif isinstance(layer, MoEConfig):
            e = lo.get("n_routed_experts", layer.num_experts)
            layer = dataclasses.replace(
                layer,
                num_experts=e,
                top_k=min(layer.top_k, e),
                intermediate=lo.get("moe_intermediate_size", layer.intermediate),
            )
        layers.append(layer)
    small = cfg.replace(hidden=lo.get("hidden_size", cfg.hidden), layers=tuple(layers))
    pairs = decoder_layers(cfg)
    n = len(cfg.layers) // 2 if pairs else len(cfg.layers)
    return lo, small, lo.get("num_hidden_layers", n)


def _lower_bound(cfg: ModelConfig, keep: int, cost) -> float:
    """The least ``cost`` of ``cfg`` with only ``keep`` layers: the dearest ones dropped
    (costs are additive over blocks, so each layer's is what removing it saves)."""
    size = 2 if decoder_layers(cfg) else 1
    units = [tuple(range(i, i + size)) for i in range(0, len(cfg.layers), size)]
    if keep >= len(units):
        return cost(cfg)
    full = cost(cfg)

    def without(unit):
        return cfg.replace(layers=tuple(x for j, x in enumerate(cfg.layers) if j not in unit))

    saved = sorted((full - cost(without(u)) for u in units), reverse=True)
    return full - sum(saved[: len(units) - keep])


def check_budget(cfg: ModelConfig, search: SearchConfig) -> None:
    """UserError when not even the smallest candidate of the search space can fit the
    budget: every axis at its narrowest and the dearest layers dropped (a lower bound on
    every candidate, so a budget that passes may still fail later, never the reverse)."""
    from jaxprune.search.space import memory_bytes

    budget = search.budget
    metric = "active" if budget.active else "total"
    src = count_params(cfg)[metric]
    limit = budget.params * (src if budget.params <= 1 else 1)
    lo, small, keep = smallest_candidate(cfg, search)
    desc = ", ".join(f"{k}={v}" for k, v in lo.items())
    least = _lower_bound(small, keep, lambda c: count_params(c)[metric])
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

        least_mem = _lower_bound(small, keep, mem)
        if least_mem > budget.memory_gb * 1e9:
            raise UserError(
                f"compress: no candidate can fit memory_gb={budget.memory_gb}: the smallest "
                f"candidate ({desc}) needs {least_mem / 1e9:.3g} GB at batch {budget.batch} x "
                f"context {budget.context}; raise memory_gb, or widen the space ({limits})"
            )
