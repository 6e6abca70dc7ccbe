"""Tiny model configs shared by the tests (distinct, prime-ish sizes, so that a wrong axis
shows up as a shape error). Imports only ``jaxprune.config``: safe before jax is set up."""

from __future__ import annotations

from jaxprune.config import (
    AttentionConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
    RopeConfig,
)

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


#: A hybrid with MoE, every bias on and two blocks of each kind, for the pruning tests.
PRUNING_CFG = ModelConfig.from_pattern(
    "M-*EM-*E",
    vocab_size=37,
    hidden=24,
    mamba=Mamba2Config(num_heads=6, head_dim=5, state=7, n_groups=3, chunk_size=4, proj_bias=True),
    attention=AttentionConfig(
        num_heads=6, num_kv_heads=2, head_dim=4, qkv_bias=True, out_bias=True
    ),
    mlp=MLPConfig(intermediate=19, bias=True),
    moe=MoEConfig(
        num_experts=8, top_k=2, intermediate=9, n_group=4, topk_group=2, shared_intermediate=7
    ),
    initializer_range=0.3,
)


def compress_config() -> ModelConfig:
    """The small Nemotron-H-style hybrid (M - * -) the pipeline and scoring tests prune,
    with transformers' dt clamps so that it exports as ``nemotron_h``."""
    inf = float("inf")
    mamba = Mamba2Config(
        num_heads=4,
        head_dim=8,
        state=8,
        n_groups=2,
        chunk_size=8,
        dt_limit=(1e-3, inf),
        decode_dt_limit=(0.0, inf),
    )
    return ModelConfig.from_pattern(
        "M-*-",
        vocab_size=50,
        hidden=32,
        mamba=mamba,
        attention=AttentionConfig(4, 2, 8),
        mlp=MLPConfig(48),
    )
