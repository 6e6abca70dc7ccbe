"""Masks: 0/1 keep-vectors per group, expanded to parameter-shaped masks and activation masks.

A :class:`Mask` holds one vector per group (``hidden``, ``blocks.3.mlp``, ..., ``depth``)
and the static group records. Inside ``jit`` it yields

* parameter masks shaped like (broadcastable to) the params: the product of the vectors of
  every group that indexes each axis, zeroing removed rows / columns / heads / experts;
* activation masks for what zeroed weights alone cannot express: RMSNorm over the kept
  hidden channels, Mamba's gated group norm over the kept (head, channel) pairs, routing over
  the kept experts, and skipped blocks.

With both, a masked model computes exactly what the materialized smaller model computes
(``tests/pruning`` checks every axis alone and together). A Mamba head order (unaware
grouping, :mod:`jaxprune.pruning.ranking`) is kept in ``order`` and permutes that block's
heads before the masks apply, so kept heads read the B / C of their new group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.config import Mamba2Config, ModelConfig, MoEConfig
from jaxprune.nn.state import param_paths
from jaxprune.pruning.groups import Group, groups
from jaxprune.pruning.ranking import ORDER, head_orders


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Mask:
    """``keep``: {group name: (size,) float 0/1}; ``groups``: static group records;
    ``order``: {``blocks.<i>.mamba_heads``: (H,) int slot -> source head} for regrouped
    Mamba blocks (empty unless group-unaware pruning moved heads between groups)."""

    keep: dict[str, jax.Array]
    groups: tuple[Group, ...] = dataclasses.field(metadata=dict(static=True))
    config: ModelConfig = dataclasses.field(metadata=dict(static=True))
    order: dict[str, jax.Array] = dataclasses.field(default_factory=dict)


def full_mask(model: nnx.Module) -> Mask:
    """A mask that keeps everything (the identity)."""
    cfg = model.config
    gs = tuple(groups(cfg, set(param_paths(model))))
    keep = {g.name: jnp.ones((g.size,), jnp.float32) for g in gs}
    keep["depth"] = jnp.ones((len(cfg.layers),), jnp.float32)
    return Mask(keep, gs, cfg)


def mask_from_keep(model: nnx.Module, kept: Mapping[str, np.ndarray]) -> Mask:
    """A mask from kept indices per group (groups not named keep everything), with the
    head orders of regrouped Mamba blocks (``blocks.<i>.mamba_head_order``)."""
    mask = full_mask(model)
    keep = dict(mask.keep)
    orders = head_orders(kept)
    for name, order in orders.items():
        if name not in keep or len(order) != keep[name].shape[0]:
            raise ValueError(f"head order for {name!r} does not match the model")
    for name, idx in kept.items():
        if name.endswith("." + ORDER):
            continue
        if name not in keep:
            raise ValueError(f"unknown prune group {name!r}")
        v = np.zeros(keep[name].shape, np.float32)
        v[np.asarray(idx, int)] = 1.0
        keep[name] = jnp.asarray(v)
    order = {k: jnp.asarray(v, jnp.int32) for k, v in orders.items()}
    return Mask(keep, mask.groups, mask.config, order)


def param_mask(mask: Mask, path: str, shape: tuple[int, ...]) -> jax.Array | None:
    """The broadcastable 0/1 mask of one parameter, or None if no group touches it."""
    out = None
    for g in mask.groups:
        for p, axis in g.members:
            if p != path:
                continue
            v = mask.keep[g.name].reshape([-1 if a == axis else 1 for a in range(len(shape))])
            out = v if out is None else out * v
    if path.startswith("blocks."):
        i = int(path.split(".")[1])
        keep = mask.keep["depth"][i]
        out = keep if out is None else out * keep
    return out


def apply(model: nnx.Module, mask: Mask) -> nnx.Module:
    """The model with every masked-out weight zeroed (pure: returns a new model)."""
    graphdef, state = nnx.split(model)
    perms = {}  # parameter path -> (head order, axis) of regrouped Mamba blocks
    for g in mask.groups:
        if g.name in mask.order:
            perms.update({p: (mask.order[g.name], a) for p, a in g.members})
    out = []
    for path, var in nnx.to_flat_state(state):
        value = var.get_value()
        name = ".".join(map(str, path))
        if name in perms:
            value = jnp.take(value, perms[name][0], axis=perms[name][1])
        m = param_mask(mask, name, value.shape)
        if m is not None:
            value = value * m.astype(value.dtype)
        out.append((path, var if m is None and name not in perms else var.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(out))


def activation_masks(mask: Mask) -> dict:
    """The ``masks=`` argument of ``HybridLM.__call__`` for this mask."""
    blocks = []
    for i, layer in enumerate(mask.config.layers):
        b: dict = {"keep": mask.keep["depth"][i]}
        if isinstance(layer, Mamba2Config):
            heads = mask.keep[f"blocks.{i}.mamba_heads"]
            b["mixer"] = heads[:, None] * mask.keep[f"blocks.{i}.mamba_channels"][None, :]
        elif isinstance(layer, MoEConfig):
            b["mixer"] = mask.keep[f"blocks.{i}.experts"]
        blocks.append(b)
    return {"hidden": mask.keep["hidden"], "blocks": tuple(blocks)}


def masked_forward(model: nnx.Module, mask: Mask, tokens: jax.Array, **kw) -> jax.Array:
    """Logits of the masked model; equal to the materialized model's (jit-friendly)."""
    return apply(model, mask)(tokens, masks=activation_masks(mask), **kw)
