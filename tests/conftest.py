"""Test setup: 8 fake CPU devices (for sharding tests) and shared tiny model configs."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# rbg keys compile far faster than threefry on CPU; tests compare implementations, never
# absolute random values.
jax.config.update("jax_default_prng_impl", "rbg")

from jaxprune.config import (  # noqa: E402
    AttentionConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
    RopeConfig,
)

# Distinct, prime-ish sizes so that a wrong axis shows up as a shape error.
MAMBA = Mamba2Config(num_heads=6, head_dim=5, state=7, n_groups=3, chunk_size=8)
ATTN = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=6)
MLP = MLPConfig(intermediate=29)
MOE = MoEConfig(
    num_experts=4, top_k=2, intermediate=11, n_group=2, topk_group=1, shared_intermediate=13
)


def hybrid_config(**kw) -> ModelConfig:
    """A Nemotron-H-style stack with every block type."""
    return ModelConfig.from_pattern(
        "M-*EM-", vocab_size=61, hidden=24, mamba=MAMBA, attention=ATTN, mlp=MLP, moe=MOE, **kw
    )


def llama_config(**kw) -> ModelConfig:
    """A Llama / Qwen-style stack: (attention with RoPE, SwiGLU) x 2."""
    attn = AttentionConfig(
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        rope=RopeConfig(theta=500.0, rotary_dim=6),
        qk_norm=True,
        qkv_bias=True,
    )
    return ModelConfig.from_pattern(
        "*-*-",
        vocab_size=53,
        hidden=20,
        attention=attn,
        mlp=MLPConfig(intermediate=23, activation="swiglu"),
        **kw,
    )


@pytest.fixture
def hybrid_cfg() -> ModelConfig:
    return hybrid_config()


@pytest.fixture
def llama_cfg() -> ModelConfig:
    return llama_config()
