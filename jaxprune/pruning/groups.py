"""Coupled-axis groups: which (parameter, axis) pairs are pruned together.

A group is one prunable axis of the model (the hidden channels, one block's MLP neurons, one
block's attention heads, ...) and the list of parameter axes that index it. The tables below
are data, one per block kind; every pruning operation (masks, materialization) is written
once over them.

Group names: ``hidden``; per block i: ``blocks.<i>.mlp``, ``.heads``, ``.kv_heads`` (whole
KV groups: only with explicit KV-group pruning), ``.mamba_heads``,
``.mamba_channels``, ``.experts``, ``.expert_mlp``, ``.shared_mlp``; and ``depth`` (one entry
per block).
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxprune.config import AttentionConfig, LayerConfig, Mamba2Config, MLPConfig, ModelConfig

Member = tuple[str, int]  # (parameter path, axis)

_MLP = {"up_proj": 1, "gate_proj": 1, "down_proj": 0, "up_bias": 0, "gate_bias": 0}
_MLP_HIDDEN = {"up_proj": 0, "gate_proj": 0, "down_proj": 1, "down_bias": 0}
_ATTN_HIDDEN = {"q_proj": 0, "k_proj": 0, "v_proj": 0, "o_proj": 2, "o_bias": 0}
_MAMBA_HIDDEN = {
    "z_proj": 0,
    "x_proj": 0,
    "B_proj": 0,
    "C_proj": 0,
    "dt_proj": 0,
    "out_proj": 2,
    "out_proj_bias": 0,
}
_MAMBA_HEADS = {
    "z_proj": 1,
    "x_proj": 1,
    "dt_proj": 1,
    "conv_x": 1,
    "conv_x_bias": 0,
    "A_log": 0,
    "D": 0,
    "dt_bias": 0,
    "norm": 0,
    "out_proj": 0,
    "z_proj_bias": 0,
    "x_proj_bias": 0,
    "dt_proj_bias": 0,
}
_MAMBA_CHANNELS = {
    "z_proj": 2,
    "x_proj": 2,
    "conv_x": 2,
    "conv_x_bias": 1,
    "norm": 1,
    "out_proj": 1,
    "z_proj_bias": 1,
    "x_proj_bias": 1,
}


@dataclass(frozen=True)
class Group:
    name: str
    size: int
    members: tuple[Member, ...]


def _members(prefix: str, table: dict[str, int], params: set[str]) -> tuple[Member, ...]:
    return tuple((f"{prefix}.{k}", a) for k, a in table.items() if f"{prefix}.{k}" in params)


def layer_groups(i: int, layer: LayerConfig, params: set[str]) -> list[Group]:
    """The width groups of block ``i`` (its hidden-channel members are in :func:`groups`)."""
    p = f"blocks.{i}.mixer"
    if isinstance(layer, MLPConfig):
        return [Group(f"blocks.{i}.mlp", layer.intermediate, _members(p, _MLP, params))]
    if isinstance(layer, AttentionConfig):
        members = _members(p, {"q_proj": 1, "o_proj": 0, "q_bias": 0}, params)
        kv = _members(p, {"k_proj": 1, "v_proj": 1, "k_bias": 0, "v_bias": 0}, params)
        return [
            Group(f"blocks.{i}.heads", layer.num_heads, members),
            Group(f"blocks.{i}.kv_heads", layer.num_kv_heads, kv),
        ]
    if isinstance(layer, Mamba2Config):
        return [
            Group(f"blocks.{i}.mamba_heads", layer.num_heads, _members(p, _MAMBA_HEADS, params)),
            Group(
                f"blocks.{i}.mamba_channels", layer.head_dim, _members(p, _MAMBA_CHANNELS, params)
            ),
        ]
    experts = {"router": 1, "correction_bias": 0, "up_proj": 0, "gate_proj": 0, "down_proj": 0}
    out = [
        Group(f"blocks.{i}.experts", layer.num_experts, _members(p, experts, params)),
        Group(
            f"blocks.{i}.expert_mlp",
            layer.intermediate,
            _members(p, {"up_proj": 2, "gate_proj": 2, "down_proj": 1}, params),
        ),
    ]
    if layer.shared_intermediate:
        out.append(
            Group(
                f"blocks.{i}.shared_mlp",
                layer.shared_intermediate,
                _members(f"{p}.shared", _MLP, params),
            )
        )
    return out


def _hidden_members(i: int, layer: LayerConfig, params: set[str]) -> tuple[Member, ...]:
    p = f"blocks.{i}.mixer"
    out = _members(f"blocks.{i}.norm", {"weight": 0}, params)
    if isinstance(layer, MLPConfig):
        return out + _members(p, _MLP_HIDDEN, params)
    if isinstance(layer, AttentionConfig):
        return out + _members(p, _ATTN_HIDDEN, params)
    if isinstance(layer, Mamba2Config):
        return out + _members(p, _MAMBA_HIDDEN, params)
    out += _members(p, {"router": 0, "latent_in": 0, "latent_out": 1}, params)
    if not layer.latent:
        out += _members(p, {"up_proj": 1, "gate_proj": 1, "down_proj": 2}, params)
    return out + _members(f"{p}.shared", _MLP_HIDDEN, params)


def groups(cfg: ModelConfig, params: set[str]) -> list[Group]:
    """Every width group of a model. ``params``: the model's parameter paths."""
    hidden = (("embed", 1),) + _members("final_norm", {"weight": 0}, params)
    if "lm_head" in params:
        hidden += (("lm_head", 0),)
    out = []
    for i, layer in enumerate(cfg.layers):
        hidden += _hidden_members(i, layer, params)
        out += layer_groups(i, layer, params)
    return [Group("hidden", cfg.hidden, hidden), *out]
