"""Masks: 0/1 keep-vectors per group, expanded to parameter-shaped masks and activation masks.

A :class:`Mask` holds one vector per group (``hidden``, ``blocks.3.mlp``, ..., ``depth``)
and the static group records. Inside ``jit`` it yields

* parameter masks shaped like (broadcastable to) the params: the product of the vectors of
  every group that indexes each axis, zeroing removed rows / columns / heads / experts;
* activation masks for what zeroed weights alone cannot express: RMSNorm over the kept
  hidden channels, Mamba's gated group norm over the kept (head, channel) pairs, routing over
  the kept experts, and skipped blocks.

With both, a masked model computes exactly what the materialized smaller model computes
(``tests/pruning`` checks every axis alone and together).
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


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Mask:
    """``keep``: {group name: (size,) float 0/1}; ``groups``: static group records."""

    keep: dict[str, jax.Array]
    groups: tuple[Group, ...] = dataclasses.field(metadata=dict(static=True))
    config: ModelConfig = dataclasses.field(metadata=dict(static=True))


def full_mask(model: nnx.Module) -> Mask:
    """A mask that keeps everything (the identity)."""
    cfg = model.config
    gs = tuple(groups(cfg, set(param_paths(model))))
    keep = {g.name: jnp.ones((g.size,), jnp.float32) for g in gs}
    keep["depth"] = jnp.ones((len(cfg.layers),), jnp.float32)
    return Mask(keep, gs, cfg)


def mask_from_keep(model: nnx.Module, kept: Mapping[str, np.ndarray]) -> Mask:
    """A mask from kept indices per group (groups not named keep everything)."""
    mask = full_mask(model)
    keep = dict(mask.keep)
    for name, idx in kept.items():
        if name not in keep:
            raise ValueError(f"unknown prune group {name!r}")
        v = np.zeros(keep[name].shape, np.float32)
        v[np.asarray(idx, int)] = 1.0
        keep[name] = jnp.asarray(v)
    return Mask(keep, mask.groups, mask.config)


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
    out = []
    for path, var in nnx.to_flat_state(state):
        value = var.get_value()
        m = param_mask(mask, ".".join(map(str, path)), value.shape)
        out.append((path, var if m is None else var.replace(value * m.astype(value.dtype))))
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
