"""Flax NNX modules: thin parameter containers around the pure functions in ``jaxprune.ops``."""

from jaxprune.nn.attention import Attention
from jaxprune.nn.cache import Cache, DMCCache, KVCache, MambaCache
from jaxprune.nn.mamba2 import Mamba2
from jaxprune.nn.mlp import MLP
from jaxprune.nn.model import Block, HybridLM
from jaxprune.nn.moe import MoE

__all__ = [
    "Attention",
    "Block",
    "Cache",
    "HybridLM",
    "DMCCache",
    "KVCache",
    "MLP",
    "Mamba2",
    "MambaCache",
    "MoE",
]
