"""Parameter counts (or inference memory) of elastic choices: exact for hard choices,
expected for soft ones.

A block's count (:func:`jaxprune.counts.layer_params`) is multilinear in the widths that
define it (hidden x heads x head_dim for Mamba2, hidden x query heads for attention,
hidden x neurons for an MLP, hidden x experts for MoE): every term has each width at most
once. Its expectation under independent choices is therefore the count at the expected
widths, which multilinear interpolation between two corner values per width computes
exactly. Depth multiplies each block's count by its probability of being kept. Inference
memory (weights + KV + SSM and conv state, :class:`Memory`) is multilinear in the same
widths, so the same holds for it.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.counts import count_params, layer_params
from jaxprune.elastic.masks import Probs, keep_vectors
from jaxprune.elastic.space import ElasticSpace

# per block kind: (config field, group suffix) of its elastic widths
_FIELDS = {
    Mamba2Config: (("num_heads", "mamba_heads"), ("head_dim", "mamba_channels")),
    AttentionConfig: (("num_heads", "heads"),),
    MLPConfig: (("intermediate", "mlp"),),
    MoEConfig: (("num_experts", "experts"),),
}


def _min_units(space: ElasticSpace) -> dict[str, int]:
    """{group: fewest units any choice keeps}."""
    out = {}
    for a in space.axes:
        if a.name == "depth":
            continue
        for r, row in enumerate(a.rows):
            for j, g in enumerate(row):
                out[g] = min(w[j] for w in a.widths[r]) * a.blocks[r][j]
    return out


def _multilinear(f, corners: list[tuple[int, int]], x: list[jax.Array]) -> jax.Array:
    """f at ``x`` for f multilinear, from its values at the corners (lo_j, hi_j)."""
    total = jnp.zeros((), jnp.float32)
    for bits in itertools.product((0, 1), repeat=len(corners)):
        w = jnp.ones((), jnp.float32)
        point = []
        for bit, (lo, hi), xj in zip(bits, corners, x):
            t = 0.0 if hi == lo else (xj - lo) / (hi - lo)
            w = w * (t if bit else 1.0 - t)
            point.append(hi if bit else lo)
        total = total + w * float(f(*point))
    return total


@dataclasses.dataclass(frozen=True)
class Memory:
    """Inference memory at ``batch`` sequences of ``context`` tokens, as
    :func:`jaxprune.search.space.memory_bytes` counts it: weights at ``weight_bytes``, KV and
    conv caches at ``cache_bytes``, SSM states in fp32."""

    batch: int = 1
    context: int = 4096
    weight_bytes: int = 2
    cache_bytes: int = 2

    def block(self, layer, hidden) -> float:
        out = self.weight_bytes * layer_params(layer, hidden)[0]
        if isinstance(layer, AttentionConfig):
            window = min(self.context, layer.sliding_window or self.context)
            out += 2 * self.batch * window * layer.num_kv_heads * layer.head_dim * self.cache_bytes
        elif isinstance(layer, Mamba2Config):
            out += self.batch * layer.num_heads * layer.head_dim * layer.state * 4
            out += self.batch * (layer.conv_kernel - 1) * layer.conv_dim * self.cache_bytes
        return out


def expected_cost(space: ElasticSpace, probs: Probs, memory: Memory | None = None) -> jax.Array:
    """E[cost] of the child under independent choices ``probs`` (exact for one-hot ones):
    its parameter count, or with ``memory`` its inference bytes."""
    cfg: ModelConfig = space.config
    keep = keep_vectors(space, probs)
    lo = _min_units(space)
    width = {g: jnp.sum(v) for g, v in keep.items() if g != "depth"}
    h_corner = (lo.get("hidden", cfg.hidden), cfg.hidden)
    h = width.get("hidden", jnp.asarray(float(cfg.hidden)))
    emb = (1 if cfg.tie_embeddings else 2) * cfg.vocab_size
    total = h * (emb + 1)  # embeddings (+ LM head) and the final norm
    if memory is not None:
        total = total * memory.weight_bytes
    for i, layer in enumerate(cfg.layers):
        fields = [(f, f"blocks.{i}.{s}") for f, s in _FIELDS[type(layer)]]
        fields = [(f, g) for f, g in fields if g in width]
        corners = [h_corner] + [(lo[g], getattr(layer, f)) for f, g in fields]
        xs = [h] + [width[g] for _, g in fields]

        def cost(hid, *vals, layer=layer, fields=fields):
            new = dataclasses.replace(layer, **{f: v for (f, _), v in zip(fields, vals)})
            return layer_params(new, hid)[0] if memory is None else memory.block(new, hid)

        block = _multilinear(cost, corners, xs)
        total = total + (keep["depth"][i] if "depth" in keep else 1.0) * block
    return total


def expected_params(space: ElasticSpace, probs: Probs) -> jax.Array:
    """E[total parameters] of the child under independent choices ``probs``; the exact
    count when ``probs`` are one-hot."""
    return expected_cost(space, probs)


def full_params(space: ElasticSpace) -> int:
    return count_params(space.config)["total"]


def budget_loss(expected: jax.Array, target: jax.Array, full: float) -> jax.Array:
    """Squared distance of the expected count to the target, in units of the parent's."""
    return jnp.square((expected - target) / full)
