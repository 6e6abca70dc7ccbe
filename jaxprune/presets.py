"""Small built-in model configs for the CLI, benchmarks and examples."""

from __future__ import annotations

from collections.abc import Callable

from jaxprune.config import (
    AttentionConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
    RopeConfig,
)
from jaxprune.errors import UserError


def tiny_hybrid() -> ModelConfig:
    """A ~0.2M-parameter Nemotron-H-style stack with Mamba2, MLP, attention and MoE blocks."""
    return ModelConfig.from_pattern(
        "M-M*-E",
        vocab_size=256,
        hidden=64,
        mamba=Mamba2Config(num_heads=8, head_dim=16, state=16, n_groups=2, chunk_size=16),
        attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=16),
        mlp=MLPConfig(intermediate=128),
        moe=MoEConfig(num_experts=4, top_k=2, intermediate=32, shared_intermediate=48),
        name="tiny-hybrid",
    )


def tiny_llama() -> ModelConfig:
    """A ~0.2M-parameter Llama-3-style stack: GQA with llama3-scaled RoPE and SwiGLU."""
    rope = RopeConfig(theta=500000.0, scaling="llama3", original_max_position=64)
    return ModelConfig.from_pattern(
        "*-" * 4,
        vocab_size=256,
        hidden=64,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=16, rope=rope),
        mlp=MLPConfig(intermediate=160, activation="swiglu"),
        tie_embeddings=True,
        name="tiny-llama",
    )


def bench_10m() -> ModelConfig:
    """~10.5M-parameter Nemotron-H-like model (the CPU benchmark shape): vocab 8192, d 256,
    6 Mamba2 (8 x 64 heads, N 64, G 2), 6 relu^2 MLP (1024), 2 GQA attention (4 q / 2 kv)."""
    return ModelConfig.from_pattern(
        "M-M-M*-M-M-M*-",
        vocab_size=8192,
        hidden=256,
        mamba=Mamba2Config(num_heads=8, head_dim=64, state=64, n_groups=2, chunk_size=128),
        attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=64),
        mlp=MLPConfig(intermediate=1024),
        name="bench-10m",
    )


def nemotron_h_1b() -> ModelConfig:
    """~0.93B-parameter Nemotron-H-8B-style stack (the GPU check's and the pod plan's mid
    size): vocab 32768 untied, d 2048, 28 blocks ``(M-M-M*-) x 4`` = 12 Mamba2 (64 x 64 heads,
    N 128, G 8, chunk 128), 12 relu^2 MLP (8192), 4 GQA attention (16 q / 4 kv x 128)."""
    return ModelConfig.from_pattern(
        "M-M-M*-" * 4,
        vocab_size=32768,
        hidden=2048,
        mamba=Mamba2Config(num_heads=64, head_dim=64, state=128, n_groups=8, chunk_size=128),
        attention=AttentionConfig(num_heads=16, num_kv_heads=4, head_dim=128),
        mlp=MLPConfig(intermediate=8192),
        name="nemotron-h-1b",
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny-hybrid": tiny_hybrid,
    "tiny-llama": tiny_llama,
    "bench-10m": bench_10m,
    "nemotron-h-1b": nemotron_h_1b,
}


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()
