"""Materialization: kept indices per group -> a smaller config and sliced parameters."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.errors import UserError
from jaxprune.layers import block_label
from jaxprune.nn.model import HybridLM
from jaxprune.nn.state import model_from_params, model_params
from jaxprune.pruning.groups import groups
from jaxprune.pruning.ranking import head_orders


def _check_layer(cfg: ModelConfig, i: int, kept: Mapping[str, np.ndarray]) -> None:
    """Group invariants: equal heads per query / SSM / routing group. Messages name the
    block as :func:`jaxprune.layers.block_label` (the ``i`` of ``blocks.<i>.``)."""
    layer, where = cfg.layers[i], block_label(cfg, i)

    def per_group(name: str, size: int, n: int) -> None:
        idx = kept.get(f"blocks.{i}.{name}")
        if idx is None:
            return
        counts = np.bincount(np.asarray(idx) // (size // n), minlength=n)
        if len(set(counts.tolist())) != 1:
            raise UserError(
                f"{where}: kept {name} must be equal in each of the {n} groups, "
                f"got {counts.tolist()}"
            )

    if isinstance(layer, AttentionConfig):
        kv = kept.get(f"blocks.{i}.kv_heads")
        heads = kept.get(f"blocks.{i}.heads")
        if kv is not None and heads is not None:  # KV-group pruning: heads of kept groups only
            r = layer.num_heads // layer.num_kv_heads
            if not set(np.asarray(heads) // r) <= set(np.asarray(kv).tolist()):
                raise UserError(f"{where}: kept query heads belong to removed KV groups")
            counts = np.bincount(np.asarray(heads) // r, minlength=layer.num_kv_heads)[kv]
            if len(set(counts.tolist())) != 1:
                raise UserError(
                    f"{where}: kept heads must be equal in each kept KV group, "
                    f"got {counts.tolist()}"
                )
        elif kv is not None:
            raise UserError(f"{where}: KV-group pruning must also give the kept query heads")
        else:
            per_group("heads", layer.num_heads, layer.num_kv_heads)
    elif isinstance(layer, Mamba2Config):
        per_group("mamba_heads", layer.num_heads, layer.n_groups)
    elif isinstance(layer, MoEConfig):
        per_group("experts", layer.num_experts, layer.n_group)


def shrink_config(cfg: ModelConfig, kept: Mapping[str, np.ndarray]) -> ModelConfig:
    """The config after keeping ``kept`` (group name -> indices; ``depth`` -> kept blocks)."""

    def n(name: str, default: int) -> int:
        return len(kept[name]) if name in kept else default

    layers = []
    for i, layer in enumerate(cfg.layers):
        _check_layer(cfg, i, kept)
        b = f"blocks.{i}"
        if isinstance(layer, MLPConfig):
            layer = dataclasses.replace(layer, intermediate=n(f"{b}.mlp", layer.intermediate))
        elif isinstance(layer, AttentionConfig):
            layer = dataclasses.replace(
                layer,
                num_heads=n(f"{b}.heads", layer.num_heads),
                num_kv_heads=n(f"{b}.kv_heads", layer.num_kv_heads),
            )
        elif isinstance(layer, Mamba2Config):
            layer = dataclasses.replace(
                layer,
                num_heads=n(f"{b}.mamba_heads", layer.num_heads),
                head_dim=n(f"{b}.mamba_channels", layer.head_dim),
            )
        else:
            e = n(f"{b}.experts", layer.num_experts)
            layer = dataclasses.replace(
                layer,
                num_experts=e,
                top_k=min(layer.top_k, e),
                intermediate=n(f"{b}.expert_mlp", layer.intermediate),
                shared_intermediate=n(f"{b}.shared_mlp", layer.shared_intermediate),
            )
        layers.append(layer)
    depth = kept.get("depth", np.arange(len(layers)))
    if len(depth) == 0:
        raise UserError("depth pruning must keep at least one block")
    layers = [layers[i] for i in np.sort(np.asarray(depth))]
    return cfg.replace(hidden=n("hidden", cfg.hidden), layers=tuple(layers))


def slice_params(
    params: Mapping[str, np.ndarray], cfg: ModelConfig, kept: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Slice every member axis of every group; drop and renumber blocks for ``depth``.
    A head order (``blocks.<i>.mamba_head_order``, unaware grouping) permutes that block's
    heads first (:mod:`jaxprune.pruning.ranking`)."""
    out = dict(params)
    orders = head_orders(kept)
    for g in groups(cfg, set(params)):
        if g.name in orders:
            if len(orders[g.name]) != g.size:
                raise UserError(f"group {g.name}: head order of length {len(orders[g.name])}")
            for path, axis in g.members:
                out[path] = np.take(out[path], orders[g.name], axis=axis)
        if g.name not in kept:
            continue
        idx = np.sort(np.asarray(kept[g.name], int))
        if len(idx) == 0 or idx[0] < 0 or idx[-1] >= g.size or len(set(idx)) != len(idx):
            raise UserError(f"group {g.name}: invalid kept indices for size {g.size}")
        for path, axis in g.members:
            out[path] = np.take(out[path], idx, axis=axis)
    if "depth" in kept:
        blocks = {int(b): j for j, b in enumerate(np.sort(np.asarray(kept["depth"], int)))}
        renamed = {}
        for path, a in out.items():
            head, _, rest = path.partition(".")
            if head != "blocks":
                renamed[path] = a
                continue
            i, _, tail = rest.partition(".")
            if int(i) in blocks:
                renamed[f"blocks.{blocks[int(i)]}.{tail}"] = a
        out = renamed
    return out


def materialize(model: HybridLM, kept: Mapping[str, np.ndarray]) -> HybridLM:
    """A smaller model keeping ``kept`` indices (group name -> sorted indices)."""
    cfg = model.config
    new_cfg = shrink_config(cfg, kept)
    return model_from_params(new_cfg, slice_params(model_params(model), cfg, kept))
