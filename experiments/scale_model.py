"""Analytic side of the pod plan: per-device bytes of sharded abstract arguments (what XLA's
argument size should equal) and model FLOPs per token of a KD step."""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxprune.config import AttentionConfig, Mamba2Config, ModelConfig
from jaxprune.counts import count_params

H100_BF16_TFLOPS = 989.0  # H100 SXM dense bf16, datasheet
H100_HBM_GIB = 80 * 1e9 / 2**30  # "80 GB" = 74.5 GiB


def shard_bytes(x: jax.ShapeDtypeStruct) -> int:
    """Bytes of one device's shard of ``x`` (its sharding's shard shape)."""
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    return math.prod(shape) * np.dtype(x.dtype).itemsize


def per_device_bytes(args: tuple, mesh) -> dict[str, int]:
    """Per-device bytes of the step's (state, rest, teacher, batch) from their shardings, and
    the unsharded totals (``*_total``) they were divided from."""
    state, rest, teacher, batch = args
    parts = {
        "student_params": state["params"],
        "opt_state": state["opt_state"],
        "teacher": teacher,
        "rest_and_batch": (rest, batch, state["rng"], state["step"]),
    }
    out = {}
    for name, tree in parts.items():
        leaves = jax.tree.leaves(tree)
        out[name] = sum(shard_bytes(x) for x in leaves)
        out[name + "_total"] = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)
    out["total"] = sum(out[k] for k in parts)
    return out


def _mixer_flops(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs per token outside the weight matmuls: causal attention scores and
    values (average context T/2) and the SSD chunked scan (ssd.md section 9 model)."""
    total = 0.0
    for layer in cfg.layers:
        if isinstance(layer, AttentionConfig):
            total += 2 * 2 * (seq_len / 2) * layer.num_heads * layer.head_dim
        elif isinstance(layer, Mamba2Config):
            g, n, q = layer.n_groups, layer.state, layer.chunk_size
            h, p = layer.num_heads, layer.head_dim
            total += 2 * (g * q * n + h * q * p + 2 * h * p * n)
    return total


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """2 x (matmul parameters: all but the input embedding table) + the mixers' own."""
    n = count_params(cfg)["active"] - cfg.vocab_size * cfg.hidden * (not cfg.tie_embeddings)
    return 2.0 * n + _mixer_flops(cfg, seq_len)


def flops_per_token(teacher: ModelConfig, student: ModelConfig, seq_len: int) -> dict:
    """Teacher forward + student forward and backward (3x its forward); block remat adds a
    second student forward (4x)."""
    t, s = forward_flops_per_token(teacher, seq_len), forward_flops_per_token(student, seq_len)
    return {
        "teacher_forward": t,
        "student_forward": s,
        "train_no_remat": t + 3 * s,
        "train_block_remat": t + 4 * s,
    }
