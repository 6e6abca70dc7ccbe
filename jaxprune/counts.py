"""Parameter counts, analytic (from a config) and measured (from a model's leaves).

The analytic counts let the architecture search price candidates without building them;
tests check that they equal the sum of leaf sizes.
"""

from __future__ import annotations

from collections import defaultdict

import jax
from flax import nnx

from jaxprune.config import (
    AttentionConfig,
    LayerConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
)


def layer_params(cfg: LayerConfig, hidden: int) -> tuple[int, int]:
    """(total, active) parameters of one block's mixer plus its pre-norm (hidden,)."""
    norm = hidden
    if isinstance(cfg, Mamba2Config):
        h, p, n, g, k = cfg.num_heads, cfg.head_dim, cfg.state, cfg.n_groups, cfg.conv_kernel
        i, gn = h * p, g * n
        proj = hidden * (2 * i + 2 * gn + h) + i * hidden
        if cfg.proj_bias:
            proj += 2 * i + 2 * gn + h + hidden
        conv = k * (i + 2 * gn) + (i + 2 * gn if cfg.conv_bias else 0)
        total = proj + conv + 3 * h + i + norm
        return total, total
    if isinstance(cfg, AttentionConfig):
        hq, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        total = 2 * hidden * hq * d + 2 * hidden * hkv * d + norm
        total += (hq + 2 * hkv) * d if cfg.qkv_bias else 0
        total += hidden if cfg.out_bias else 0
        total += 2 * d if cfg.qk_norm else 0
        return total, total
    if isinstance(cfg, MLPConfig):
        total = _mlp(hidden, cfg.intermediate, cfg.activation, cfg.bias) + norm
        return total, total
    if isinstance(cfg, MoEConfig):
        de = cfg.latent or hidden
        per_expert = _mlp(de, cfg.intermediate, cfg.activation, False)
        shared = _mlp(hidden, cfg.shared_intermediate, cfg.activation, False)
        dense = hidden * cfg.num_experts + norm + (2 * hidden * de if cfg.latent else 0)
        dense += cfg.num_experts if cfg.router == "sigmoid" else 0
        dense += shared if cfg.shared_intermediate else 0
        return dense + cfg.num_experts * per_expert, dense + cfg.top_k * per_expert
    raise TypeError(f"unknown layer config {type(cfg).__name__}")


def _mlp(d: int, f: int, activation: str, bias: bool) -> int:
    mats = 3 if activation == "swiglu" else 2
    return mats * d * f + ((mats - 1) * f + d if bias else 0)


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Analytic counts: ``total``, ``active`` (per token, MoE top-k only), ``embedding``
    (embeddings + LM head) and one ``<kind>`` entry per block kind present."""
    out: dict[str, int] = defaultdict(int)
    emb = cfg.vocab_size * cfg.hidden * (1 if cfg.tie_embeddings else 2)
    out["embedding"] = emb
    total = active = emb + cfg.hidden  # + final norm
    for layer in cfg.layers:
        t, a = layer_params(layer, cfg.hidden)
        out[layer.kind] += t
        total, active = total + t, active + a
    out["total"], out["active"] = total, active
    return dict(out)


def count_leaves(model: nnx.Module) -> int:
    """Sum of the sizes of every variable leaf (params and buffers)."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model)))
