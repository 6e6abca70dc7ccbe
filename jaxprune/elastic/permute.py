"""Importance order: permute every coupled axis so that its best units come first.

After :func:`permute_to_importance` every budget of an elastic model keeps a *prefix* of
each axis, which is what makes the submodels nested: hidden channels, MLP neurons, Mamba
head channels and MoE experts are sorted by score; Mamba heads are sorted *within* each
B/C group (so a prefix of every group keeps heads reading their own group's B/C) and
attention query heads within each KV group; KV heads themselves are not moved. Every
member of a group (:mod:`jaxprune.pruning.groups`) is permuted the same way, so the
permuted model computes exactly the function of the original (``tests/elastic``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.nn.state import model_from_params, model_params
from jaxprune.pruning.groups import groups


def descending(score: np.ndarray) -> np.ndarray:
    """Indices by decreasing score (ties: lower index first)."""
    return np.argsort(-np.asarray(score, np.float64), kind="stable")


def within_groups(score: np.ndarray, n_groups: int) -> np.ndarray:
    """A permutation sorting each of ``n_groups`` contiguous blocks by decreasing score,
    leaving every unit in its block."""
    size = len(score) // n_groups
    return np.concatenate(
        [g * size + descending(score[g * size : (g + 1) * size]) for g in range(n_groups)]
    )


def importance_orders(cfg: ModelConfig, scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{group name: permutation} from importance ``scores`` (``jaxprune importance``'s
    keys: ``hidden``, ``blocks.<i>.mlp`` / ``.heads`` / ``.mamba`` (H, P) / ``.experts``
    / ``.expert_mlp`` / ``.shared_mlp``). A group without a score keeps its order."""
    out = {}
    if "hidden" in scores:
        out["hidden"] = descending(scores["hidden"])
    for i, layer in enumerate(cfg.layers):
        b = f"blocks.{i}."
        if isinstance(layer, MLPConfig) and b + "mlp" in scores:
            out[b + "mlp"] = descending(scores[b + "mlp"])
        elif isinstance(layer, AttentionConfig) and b + "heads" in scores:
            out[b + "heads"] = within_groups(scores[b + "heads"], layer.num_kv_heads)
        elif isinstance(layer, Mamba2Config) and b + "mamba" in scores:
            s = np.asarray(scores[b + "mamba"], np.float64)  # (H, P)
            out[b + "mamba_heads"] = within_groups(np.linalg.norm(s, axis=1), layer.n_groups)
            out[b + "mamba_channels"] = descending(np.linalg.norm(s, axis=0))
        elif isinstance(layer, MoEConfig):
            if b + "experts" in scores:
                out[b + "experts"] = within_groups(scores[b + "experts"], layer.n_group)
            for key in ("expert_mlp", "shared_mlp"):
                if b + key in scores:
                    out[b + key] = descending(scores[b + key])
    return out


def permute_params(
    params: Mapping[str, np.ndarray], cfg: ModelConfig, orders: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every member axis of every group in ``orders`` taken in that order (a new dict)."""
    out = dict(params)
    by_name = {g.name: g for g in groups(cfg, set(params))}
    for name, perm in orders.items():
        g = by_name.get(name)
        if g is None:
            raise UserError(f"elastic: no group {name!r} in this model")
        perm = np.asarray(perm, int)
        if sorted(perm.tolist()) != list(range(g.size)):
            raise UserError(f"elastic: order of {name!r} is not a permutation of {g.size}")
        for path, axis in g.members:
            out[path] = np.take(out[path], perm, axis=axis)
    return out


def permute_to_importance(
    model: HybridLM, scores: Mapping[str, np.ndarray]
) -> tuple[HybridLM, dict[str, np.ndarray]]:
    """(the permuted model, {group: permutation}); same function, best units first."""
    orders = importance_orders(model.config, scores)
    params = permute_params(model_params(model), model.config, orders)
    return model_from_params(model.config, params), orders
