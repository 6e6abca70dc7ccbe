"""Puzzle's variant library: per parent block, the replacements it may take.

Every variant is cut from the parent by the Minitron importance scores (never a random
init), as per-block pruning targets (``blocks.<i>.<key>``, :mod:`jaxprune.pruning.targets`)
or the block's removal (a no-op):

* MLP: ``mlp_fractions`` of the width (multiples of ``divisor``), or removed;
* Mamba2: ``mamba_fractions`` of the heads in every group (group-aware), or removed;
* attention: as is, ``attention_fractions`` of the query heads per KV group, half the KV
  groups (with their query heads), or removed;
* MoE: ``expert_fractions`` of the experts per routing group, ``moe_width_fractions`` of
  each expert's width, or removed.

Each variant carries its block's costs (total / active parameters, inference bytes at
``batch`` x ``context``: weights + KV + SSM / conv state), so a choice of one variant per
block is priced by summing them plus the parent's shared part (embeddings, final norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.counts import count_params, layer_params
from jaxprune.errors import UserError
from jaxprune.pruning.materialize import shrink_config
from jaxprune.pruning.prune import plan
from jaxprune.search.space import layer_cache_bytes


@dataclass(frozen=True)
class LibraryConfig:
    """Which variants each block kind gets (fractions of the parent block's size)."""

    mlp_fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    mamba_fractions: tuple[float, ...] = (1.0, 0.75, 0.5)
    attention_fractions: tuple[float, ...] = (1.0, 0.5)
    kv_fractions: tuple[float, ...] = (0.5,)
    expert_fractions: tuple[float, ...] = (1.0, 0.5)
    moe_width_fractions: tuple[float, ...] = (1.0, 0.5)
    removable: bool = True
    divisor: int = 8
    batch: int = 1
    context: int = 4096
    weight_bytes: int = 2

    def __post_init__(self):
        for name in ("mlp_fractions", "mamba_fractions", "attention_fractions",
                     "kv_fractions", "expert_fractions", "moe_width_fractions"):  # fmt: skip
            for f in getattr(self, name):
                if not 0 < f <= 1:
                    raise UserError(f"puzzle: {name} must lie in (0, 1], got {f}")
        if self.divisor < 1 or self.batch < 1 or self.context < 1:
            raise UserError("puzzle: divisor, batch and context must be >= 1")


@dataclass(frozen=True)
class Variant:
    """One replacement of parent block ``block``: per-block ``targets`` (empty: the block
    as is) or ``removed``; ``layer`` its config (None when removed) and its costs."""

    block: int
    name: str
    targets: dict
    removed: bool
    layer: object | None
    params: int
    active: int
    memory: int

    def record(self) -> dict:
        return {
            "block": self.block,
            "name": self.name,
            "targets": self.targets,
            "removed": self.removed,
            "params": self.params,
            "active": self.active,
            "memory": self.memory,
        }


def _round(n: float, divisor: int, size: int) -> int:
    return int(min(size, max(divisor, divisor * round(n / divisor))))


def _per_group(total: int, groups: int, f: float) -> int:
    """Heads kept: the same count in every group, at least one."""
    return groups * max(1, round(total // groups * f))


def block_targets(layer, i: int, lib: LibraryConfig) -> list[tuple[str, dict]]:
    """(name, per-block targets) of every non-removal variant of block ``i``, the unchanged
    block first (duplicates are removed by :func:`build_library`)."""
    b = f"blocks.{i}."
    out: list[tuple[str, dict]] = [("keep", {})]
    if isinstance(layer, MLPConfig):
        for f in lib.mlp_fractions:
            w = _round(f * layer.intermediate, lib.divisor, layer.intermediate)
            out.append((f"ffn{w}", {b + "intermediate_size": w}))
    elif isinstance(layer, Mamba2Config):
        for f in lib.mamba_fractions:
            h = _per_group(layer.num_heads, layer.n_groups, f)
            out.append((f"heads{h}", {b + "mamba_num_heads": h}))
    elif isinstance(layer, AttentionConfig):
        g = layer.num_kv_heads
        for f in lib.attention_fractions:
            q = _per_group(layer.num_heads, g, f)
            out.append((f"q{q}", {b + "num_attention_heads": q}))
        for f in lib.kv_fractions:
            kv = max(1, round(g * f))
            heads = layer.num_heads // g * kv
            t = {b + "num_key_value_heads": kv, b + "num_attention_heads": heads}
            out.append((f"kv{kv}", t))
    elif isinstance(layer, MoEConfig):
        for f in lib.expert_fractions:
            e = _per_group(layer.num_experts, layer.n_group, f)
            e = max(e, layer.top_k + (-layer.top_k) % layer.n_group)
            out.append((f"experts{e}", {b + "n_routed_experts": e}))
        for f in lib.moe_width_fractions:
            w = _round(f * layer.intermediate, lib.divisor, layer.intermediate)
            out.append((f"expert_ffn{w}", {b + "moe_intermediate_size": w}))
    return out


def build_library(cfg: ModelConfig, scores: dict, lib: LibraryConfig) -> list[list[Variant]]:
    """Per parent block, its variants (the unchanged block first; removal last)."""
    out = []
    for i, layer in enumerate(cfg.layers):
        row, seen = [], set()
        for name, t in block_targets(layer, i, lib):
            small = shrink_config(cfg, plan(cfg, scores, t)).layers[i] if t else layer
            if small not in seen:
                seen.add(small)
                row.append(_variant(cfg, i, name, t, small, lib))
        if lib.removable:
            row.append(Variant(i, "removed", {}, True, None, 0, 0, 0))
        out.append(row)
    return out


def _variant(cfg: ModelConfig, i: int, name: str, t: dict, layer, lib: LibraryConfig) -> Variant:
    total, active = layer_params(layer, cfg.hidden)
    state = layer_cache_bytes(layer, batch=lib.batch, context=lib.context)
    mem = total * lib.weight_bytes + sum(state.values())
    return Variant(i, name, t, False, layer, total, active, mem)


def shared_costs(cfg: ModelConfig, lib: LibraryConfig) -> dict[str, int]:
    """The parent's costs outside its blocks (embeddings, LM head, final norm)."""
    blocks = [layer_params(x, cfg.hidden) for x in cfg.layers]
    c = count_params(cfg)
    total = c["total"] - sum(t for t, _ in blocks)
    active = c["active"] - sum(a for _, a in blocks)
    return {"params": total, "active": active, "memory": total * lib.weight_bytes}


def assemble(cfg: ModelConfig, scores: dict, chosen: list[Variant]) -> dict[str, np.ndarray]:
    """Kept indices (for :func:`jaxprune.pruning.materialize.materialize` or a mask) of one
    variant per block."""
    if [v.block for v in chosen] != list(range(len(cfg.layers))):
        raise ValueError("assemble: one variant per parent block, in block order")
    targets = {k: v for x in chosen for k, v in x.targets.items()}
    kept = plan(cfg, scores, targets) if targets else {}
    removed = [x.block for x in chosen if x.removed]
    if len(removed) == len(chosen):
        raise UserError("puzzle: a choice that removes every block")
    if removed:
        kept["depth"] = np.array([x.block for x in chosen if not x.removed])
    return kept


def student_config(cfg: ModelConfig, scores: dict, chosen: list[Variant]) -> ModelConfig:
    """The heterogeneous student's config."""
    return shrink_config(cfg, assemble(cfg, scores, chosen))
