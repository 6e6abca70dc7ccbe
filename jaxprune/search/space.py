"""The candidate space: per-axis choice grids, analytic parameter and memory costs."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.pruning.materialize import shrink_config
from jaxprune.pruning.prune import plan
from jaxprune.pruning.targets import KIND_COUNTS, decoder_layers


@dataclass(frozen=True)
class SearchSpace:
    """Which axes to search and how finely.

    ``max_prune``: largest fraction removed from each axis; ``divisor``: width choices are
    multiples of it (heads: of the KV heads / n_groups / n_group as the axis requires);
    ``depth_step``: layer counts searched in steps of this; ``axes``: HF target names, or
    the per-kind block counts of MiniPuzzle (``num_mamba_layers``, ``num_mlp_layers``,
    ``num_attention_layers``, ``num_moe_layers``: each kind's lowest-ranked blocks go).
    """

    axes: tuple[str, ...] = (
        "hidden_size",
        "intermediate_size",
        "mamba_num_heads",
        "num_attention_heads",
        "moe_intermediate_size",
        "num_hidden_layers",
    )
    max_prune: float = 0.5
    divisor: int = 64
    depth_step: int = 1
    max_candidates: int = 200_000


def _grid(source: int, step: int, max_prune: float) -> list[int]:
    lo = max(step, math.ceil(source * (1 - max_prune) / step) * step)
    vals = list(range(lo, source + 1, step))
    return vals if source in vals else [*vals, source]


def axis_choices(cfg: ModelConfig, space: SearchSpace) -> dict[str, list[int]]:
    """Allowed values per axis (always including the source value)."""
    layers = cfg.layers
    first = {
        t: next((x for x in layers if isinstance(x, t)), None)
        for t in (MLPConfig, AttentionConfig, Mamba2Config, MoEConfig)
    }
    out: dict[str, list[int]] = {}
    for axis in space.axes:
        div = space.divisor
        if axis == "hidden_size":
            out[axis] = _grid(cfg.hidden, min(div, cfg.hidden), space.max_prune)
        elif axis == "intermediate_size" and first[MLPConfig]:
            f = first[MLPConfig].intermediate
            out[axis] = _grid(f, min(div, f), space.max_prune)
        elif axis == "num_attention_heads" and first[AttentionConfig]:
            a = first[AttentionConfig]
            out[axis] = _grid(a.num_heads, a.num_kv_heads, space.max_prune)
        elif axis == "mamba_num_heads" and first[Mamba2Config]:
            m = first[Mamba2Config]
            out[axis] = _grid(m.num_heads, m.n_groups, space.max_prune)
        elif axis == "mamba_head_dim" and first[Mamba2Config]:
            m = first[Mamba2Config]
            out[axis] = _grid(m.head_dim, min(8, m.head_dim), space.max_prune)
        elif axis == "n_routed_experts" and first[MoEConfig]:
            e = first[MoEConfig]
            step = max(e.n_group, 1)
            out[axis] = [
                v
                for v in _grid(e.num_experts, step, space.max_prune)
                if v // e.n_group * e.topk_group >= e.top_k
            ]
        elif axis == "moe_intermediate_size" and first[MoEConfig]:
            f = first[MoEConfig].intermediate
            out[axis] = _grid(f, min(div, f), space.max_prune)
        elif axis == "num_hidden_layers":
            n = len(layers) // 2 if decoder_layers(cfg) else len(layers)
            out[axis] = _grid(n, space.depth_step, space.max_prune)
        elif axis in KIND_COUNTS:  # MiniPuzzle: blocks kept per kind
            n = sum(x.kind == KIND_COUNTS[axis] for x in layers)
            if n:
                out[axis] = _grid(n, space.depth_step, space.max_prune)
    return {k: v for k, v in out.items() if v}


def layer_cache_bytes(layer, *, batch: int, context: int, cache_bytes: int = 2) -> dict[str, int]:
    """One block's inference state: KV cache, SSM state (fp32) and conv state, in bytes."""
    kv = ssm = conv = 0
    if isinstance(layer, AttentionConfig):
        window = min(context, layer.sliding_window or context)
        kv = 2 * batch * window * layer.num_kv_heads * layer.head_dim * cache_bytes
    elif isinstance(layer, Mamba2Config):
        ssm = batch * layer.num_heads * layer.head_dim * layer.state * 4
        conv = batch * (layer.conv_kernel - 1) * layer.conv_dim * cache_bytes
    return {"kv": kv, "ssm": ssm, "conv": conv}


def memory_bytes(
    cfg: ModelConfig, *, batch: int, context: int, weight_bytes: int = 2, cache_bytes: int = 2
) -> dict[str, int]:
    """Inference memory: weights + KV cache + SSM state (fp32) + conv state."""
    state = {"kv": 0, "ssm": 0, "conv": 0}
    for layer in cfg.layers:
        for k, v in layer_cache_bytes(
            layer, batch=batch, context=context, cache_bytes=cache_bytes
        ).items():
            state[k] += v
    weights = count_params(cfg)["total"] * weight_bytes
    return {"weights": weights, **state, "total": weights + sum(state.values())}


def candidates(
    cfg: ModelConfig, scores: dict, space: SearchSpace, depth: str = "depth_block_influence"
):
    """Yield (targets, pruned config) for every combination of axis choices (``depth``: the
    score key that ranks the blocks the depth axes drop).

    Each axis value is planned once and the kept-index sets are merged, so enumerating is
    cheap; widths (hence costs) are exact. The final candidates are re-planned jointly.
    """
    choices = axis_choices(cfg, space)
    keys = list(choices)
    total = math.prod(len(v) for v in choices.values())
    if total > space.max_candidates:
        raise UserError(
            f"search space has {total:,} candidates (> {space.max_candidates:,}); "
            "raise the divisor or lower max_prune"
        )
    if any(k in KIND_COUNTS for k in keys) and "num_hidden_layers" in keys:
        raise UserError("search: per-kind block counts and num_hidden_layers are two depth axes")
    per_axis = {(k, v): plan(cfg, scores, {k: v}, depth) for k in keys for v in choices[k]}
    for values in itertools.product(*(choices[k] for k in keys)):
        kept: dict = {}
        for k, v in zip(keys, values, strict=True):
            for group, idx in per_axis[(k, v)].items():
                if group == "depth" and "depth" in kept:  # several per-kind depth axes
                    idx = np.intersect1d(kept["depth"], idx)
                kept[group] = idx
        yield dict(zip(keys, values, strict=True)), shrink_config(cfg, kept)


def smallest_candidate(cfg: ModelConfig, space: SearchSpace) -> tuple[dict, ModelConfig, int]:
    """(the narrowest value of every axis, the config with those widths and every block,
    the fewest layers (HF numbering) the search may keep)."""
    lo = {k: min(v) for k, v in axis_choices(cfg, space).items()}
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


def lower_bound(cfg: ModelConfig, keep: int, cost) -> float:
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
