"""The elastic search space: which axes are elastic and the widths each choice keeps.

An :class:`Axis` has ``rows`` of independent choices (one row, or one per layer for a
heterogeneous FFN) over the same ``fractions`` (1.0 first, then decreasing); a row drives
one or more mask groups, each keeping a *prefix* of its units in importance order
(:mod:`jaxprune.elastic.permute`), per B/C group for Mamba heads, per KV group for query
heads, per expert group for experts. Depth is its own axis: choice k skips the first k
blocks of the depth ranking (k decoder layers, each an attention + MLP pair, for
Llama-style stacks), so a smaller budget always skips a superset of the blocks a larger
one skips. Choice index 0 keeps everything; a larger index never keeps more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.errors import UserError
from jaxprune.pruning.targets import decoder_layers

AXES = ("hidden", "mlp", "mamba_heads", "mamba_head_dim", "attn_heads", "experts", "depth")
DEFAULT_FRACTIONS = (1.0, 0.875, 0.75, 0.625, 0.5)


@dataclass(frozen=True)
class Axis:
    """``rows[r]``: the groups choice row r drives; ``sizes[r]``: their sizes; ``blocks``:
    units per group are chosen within ``blocks`` equal contiguous blocks (B/C groups, KV
    groups, expert groups; 1 otherwise); ``widths[r][c]``: units kept per block of each
    group of row r at choice c (depth: blocks skipped)."""

    name: str
    rows: tuple[tuple[str, ...], ...]
    sizes: tuple[tuple[int, ...], ...]
    blocks: tuple[tuple[int, ...], ...]
    widths: tuple[tuple[tuple[int, ...], ...], ...]  # [row][choice][group in row]

    @property
    def n_choices(self) -> int:
        return len(self.widths[0])


@dataclass(frozen=True)
class ElasticSpace:
    """Every elastic axis of one (permuted) parent; ``depth_order``: blocks in skipping
    order (first = least important)."""

    config: ModelConfig
    axes: tuple[Axis, ...]
    depth_order: tuple[int, ...] = ()

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)

    def kept(self, choices: dict[str, Sequence[int]]) -> dict[str, np.ndarray]:
        """Kept indices per group (``jaxprune.pruning.materialize``'s ``kept``) for hard
        ``choices`` {axis: (rows,) choice indices}."""
        kept: dict[str, np.ndarray] = {}
        for a in self.axes:
            for r, c in enumerate(np.asarray(choices[a.name]).reshape(-1)):
                if a.name == "depth":
                    skipped = set(self.depth_order[: a.widths[r][c][0]])
                    n = len(self.config.layers)
                    kept["depth"] = np.array([i for i in range(n) if i not in skipped])
                    continue
                for g, size, nb, w in zip(a.rows[r], a.sizes[r], a.blocks[r], a.widths[r][c]):
                    per = size // nb
                    kept[g] = np.concatenate([b * per + np.arange(w) for b in range(nb)])
        return kept


def _round(x: float, align: int, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, align * round(x / align))))


def _widths(size: int, blocks: int, fractions: Sequence[float], align: int, lo: int = 1):
    per = size // blocks
    a = align if per >= 2 * align else 1
    return [_round(f * per, a, lo, per) for f in fractions]


def build_space(
    cfg: ModelConfig,
    depth_scores: np.ndarray | None = None,
    *,
    axes: Sequence[str] = AXES,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    max_skip: float = 0.25,
    uniform: bool = False,
    align: int = 8,
) -> ElasticSpace:
    """The space of ``cfg`` (an importance-permuted parent). ``uniform``: one choice per
    axis for all layers (children load in transformers); else the FFN width is chosen per
    layer. ``depth_scores`` (L,): the depth ranking (low = skipped first; e.g. the
    iterative normalized-MSE one), needed for the depth axis, which offers 0 .. ``max_skip``
    x L skipped blocks. Widths are rounded to multiples of ``align`` where the axis is at
    least twice as large."""
    fr = tuple(float(f) for f in fractions)
    if not fr or fr[0] != 1.0 or any(b >= a for a, b in zip(fr, fr[1:])) or fr[-1] <= 0:
        raise UserError(f"elastic: fractions must start at 1.0 and decrease, got {fr}")
    unknown = set(axes) - set(AXES)
    if unknown:
        raise UserError(f"elastic: unknown axes {sorted(unknown)}; choose from {', '.join(AXES)}")
    per_kind: dict[str, list[tuple[str, int, int, list[int]]]] = {a: [] for a in AXES}
    for i, layer in enumerate(cfg.layers):
        b = f"blocks.{i}."
        if isinstance(layer, MLPConfig):
            per_kind["mlp"].append((b + "mlp", layer.intermediate, 1))
        elif isinstance(layer, AttentionConfig):
            per_kind["attn_heads"].append((b + "heads", layer.num_heads, layer.num_kv_heads))
        elif isinstance(layer, Mamba2Config):
            per_kind["mamba_heads"].append((b + "mamba_heads", layer.num_heads, layer.n_groups))
            per_kind["mamba_head_dim"].append((b + "mamba_channels", layer.head_dim, 1))
        elif isinstance(layer, MoEConfig):
            per_kind["experts"].append((b + "experts", layer.num_experts, layer.n_group))
    per_kind["hidden"] = [("hidden", cfg.hidden, 1)]
    out = []
    for name in AXES:
        if name not in axes or name == "depth" or not per_kind[name]:
            continue
        members = per_kind[name]
        rows = [[m] for m in members] if name == "mlp" and not uniform else [members]
        widths = []
        for row in rows:
            ws = []
            for g, size, nb in row:
                lo = _moe_floor(cfg, g) if name == "experts" else 1
                ws.append(_widths(size, nb, fr, align, lo))
            widths.append(tuple(tuple(w[c] for w in ws) for c in range(len(fr))))
        out.append(
            Axis(
                name,
                tuple(tuple(m[0] for m in row) for row in rows),
                tuple(tuple(m[1] for m in row) for row in rows),
                tuple(tuple(m[2] for m in row) for row in rows),
                tuple(widths),
            )
        )
    order: tuple[int, ...] = ()
    if "depth" in axes and max_skip > 0:
        if depth_scores is None:
            raise UserError("elastic: the depth axis needs a depth ranking (depth scores)")
        n = len(cfg.layers)
        s = np.asarray(depth_scores, np.float64)
        pairs = decoder_layers(cfg)  # Llama-style: skip whole decoder layers (block pairs)
        units = s[0::2] + s[1::2] if pairs else s
        per = 2 if pairs else 1
        k = int(max_skip * len(units))
        if k >= 1:
            ranked = np.argsort(units, kind="stable")
            order = tuple(int(per * u + j) for u in ranked for j in range(per))
            widths = tuple((per * j,) for j in range(k + 1))
            out.append(Axis("depth", (("depth",),), ((n,),), ((1,),), (widths,)))
    return ElasticSpace(cfg, tuple(out), order)


def _moe_floor(cfg: ModelConfig, group: str) -> int:
    """Fewest experts per expert group that still hold top_k over topk_group groups."""
    layer = cfg.layers[int(group.split(".")[1])]
    return max(1, -(-layer.top_k // layer.topk_group))
