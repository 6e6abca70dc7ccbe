"""Scores + targets -> kept indices per group (group-aware rankings) -> a smaller model.

The ablation switches (random rankings, group-unaware Mamba heads) are described in
:mod:`jaxprune.pruning.ranking`."""

from __future__ import annotations

import numpy as np

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.nn.model import HybridLM
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.ranking import ORDER, check_switches, regroup
from jaxprune.pruning.targets import KIND_COUNTS, decoder_layers, target_for, validate_targets


def top(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, in ascending index order (ties: lower index)."""
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    return np.sort(order[:k])


def top_per_group(score: np.ndarray, groups: int, k: int) -> np.ndarray:
    """The k best of each of ``groups`` contiguous blocks (so every group keeps k)."""
    size = len(score) // groups
    return np.concatenate(
        [g * size + top(score[g * size : (g + 1) * size], k) for g in range(groups)]
    )


def mamba_keep(s: np.ndarray, n_groups: int, heads: int, head_dim: int, grouping="aware"):
    """Minitron-SSM: channels by one ranking shared by all heads, then heads on the kept
    channels within each group. s (H, P) -> (kept heads, kept channels). ``grouping=
    "unaware"``: heads ranked globally, ignoring groups (see :mod:`jaxprune.pruning.ranking`)."""
    channels = top(np.linalg.norm(s, axis=0), head_dim)
    head_score = np.linalg.norm(s[:, channels], axis=1)
    if grouping == "unaware":
        return top(head_score, heads), channels
    return top_per_group(head_score, n_groups, heads // n_groups), channels


def _mamba(b: str, s: np.ndarray, layer: Mamba2Config, heads: int, dim: int, grouping: str):
    """The kept-index entries of one Mamba block (a head order when regrouped)."""
    kept_heads, channels = mamba_keep(s, layer.n_groups, heads, dim, grouping)
    out = {b + "mamba_channels": channels}
    if grouping == "unaware":
        kept_heads, order = regroup(kept_heads, layer.num_heads, layer.n_groups)
        if order is not None:
            out[b + ORDER] = order
    out[b + "mamba_heads"] = kept_heads
    return out


def attention_keep(
    b: str, score: np.ndarray, layer: AttentionConfig, heads: int | None, kv: int | None
) -> dict[str, np.ndarray]:
    """Heads ranked within each query group; with ``kv`` (explicit KV-group pruning) whole
    groups are ranked first by the summed scores of their query heads and removed with
    their k / v rows, query heads and o_proj columns."""
    g, r = layer.num_kv_heads, layer.num_heads // layer.num_kv_heads
    heads = heads or layer.num_heads * (kv or g) // g
    if kv is None or kv == g:
        return {b + "heads": top_per_group(score, g, heads // g)}
    groups = top(score.reshape(g, r).sum(axis=1), kv)
    per = heads // kv
    kept = np.concatenate([grp * r + top(score[grp * r : (grp + 1) * r], per) for grp in groups])
    return {b + "heads": kept, b + "kv_heads": groups}


def plan(
    cfg: ModelConfig,
    scores: dict,
    targets: dict,
    depth: str = "depth_block_influence",
    mamba_grouping: str = "aware",
):
    """Kept indices per group for ``targets`` (HF config names); see ``targets.KEYS``.
    ``mamba_grouping``: ``aware`` or ``unaware`` (:mod:`jaxprune.pruning.ranking`; random
    ranking is a property of the ``scores``: :func:`~jaxprune.pruning.ranking.random_scores`).
    """
    check_switches("importance", 0, mamba_grouping)
    validate_targets(cfg, targets)
    kept: dict[str, np.ndarray] = {}
    t = targets
    if "hidden_size" in t:
        kept["hidden"] = top(scores["hidden"], t["hidden_size"])
    for i, layer in enumerate(cfg.layers):
        b = f"blocks.{i}."

        def want(key: str, i=i):
            return target_for(t, i, key)

        if isinstance(layer, MLPConfig) and want("intermediate_size"):
            kept[b + "mlp"] = top(scores[b + "mlp"], want("intermediate_size"))
        elif isinstance(layer, AttentionConfig) and (
            want("num_attention_heads") or want("num_key_value_heads")
        ):
            kept.update(
                attention_keep(
                    b,
                    scores[b + "heads"],
                    layer,
                    want("num_attention_heads"),
                    want("num_key_value_heads"),
                )
            )
        elif isinstance(layer, Mamba2Config) and (
            want("mamba_num_heads") or want("mamba_head_dim")
        ):
            kept.update(
                _mamba(
                    b,
                    scores[b + "mamba"],
                    layer,
                    want("mamba_num_heads") or layer.num_heads,
                    want("mamba_head_dim") or layer.head_dim,
                    mamba_grouping,
                )
            )
        elif isinstance(layer, MoEConfig):
            if want("n_routed_experts"):
                kept[b + "experts"] = top_per_group(
                    scores[b + "experts"], layer.n_group, want("n_routed_experts") // layer.n_group
                )
            if want("moe_intermediate_size"):
                kept[b + "expert_mlp"] = top(
                    scores[b + "expert_mlp"], want("moe_intermediate_size")
                )
            if want("moe_shared_expert_intermediate_size") and layer.shared_intermediate:
                kept[b + "shared_mlp"] = top(
                    scores[b + "shared_mlp"], want("moe_shared_expert_intermediate_size")
                )
    drop = _dropped_blocks(cfg, scores, t, depth)
    if drop:
        kept["depth"] = np.array([i for i in range(len(cfg.layers)) if i not in drop])
    return kept


def _dropped_blocks(cfg: ModelConfig, scores: dict, t: dict, depth: str) -> set[int]:
    per_kind = [k for k in KIND_COUNTS if k in t]
    if per_kind:  # MiniPuzzle: the lowest-ranked blocks of each kind, kinds independently
        s = np.asarray(scores[depth], np.float64)
        out: set[int] = set()
        for key in per_kind:
            blocks = [i for i, x in enumerate(cfg.layers) if x.kind == KIND_COUNTS[key]]
            ranked = sorted(blocks, key=lambda i: (s[i], i))
            out.update(ranked[: len(blocks) - t[key]])
        return out
    pairs = decoder_layers(cfg)
    n = len(cfg.layers) // 2 if pairs else len(cfg.layers)
    if "drop_layers" in t:
        layers = set(t["drop_layers"])
    elif "num_hidden_layers" in t and t["num_hidden_layers"] < n:
        s = np.asarray(scores[depth], np.float64)
        if pairs:
            s = s[0::2] + s[1::2]
        layers = set(np.argsort(s, kind="stable")[: n - t["num_hidden_layers"]].tolist())
    else:
        return set()
    return {b for i in layers for b in ((2 * i, 2 * i + 1) if pairs else (i,))}


def prune(
    model: HybridLM,
    scores: dict,
    targets: dict,
    depth: str = "depth_block_influence",
    mamba_grouping: str = "aware",
):
    """The materialized pruned model. ``targets`` are validated first (:func:`validate_targets`):
    an unknown key or a value out of range is a UserError, never a silent no-op.
    ``mamba_grouping``: see :func:`plan`."""
    return materialize(model, plan(model.config, scores, targets, depth, mamba_grouping))
