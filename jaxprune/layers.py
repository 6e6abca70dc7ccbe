"""One numbering for layers, used by targets, error messages and export refusals.

The index everywhere is the **block index** ``i`` of ``ModelConfig.layers``: the ``i`` of the
``blocks.<i>.`` parameter paths, of ``blocks.<i>.<key>`` per-block targets and of every
message that names a block. Each block is one mixer (Mamba2, attention, MLP or MoE).

* Nemotron-H (and any hybrid stack): an HF layer *is* a block, so HF layer ``i`` = block ``i``.
* Llama-family models (the pattern ``*-`` / ``*E`` repeated): an HF decoder layer is a pair
  of blocks, so HF decoder layer ``j`` = blocks ``2j`` (attention) and ``2j+1`` (MLP / MoE).
  ``drop_layers`` and ``num_hidden_layers`` count HF decoder layers there (a whole layer
  goes), and messages name both numbers: ``block 3 (mlp, HF decoder layer 1)``.
"""

from __future__ import annotations

from jaxprune.config import ModelConfig

#: Per-block target key -> the block kinds (``LayerConfig.kind``) it applies to.
TARGET_KINDS: dict[str, tuple[str, ...]] = {
    "intermediate_size": ("mlp",),
    "num_attention_heads": ("attention",),
    "num_key_value_heads": ("attention",),
    "mamba_num_heads": ("mamba2",),
    "mamba_head_dim": ("mamba2",),
    "n_routed_experts": ("moe",),
    "moe_intermediate_size": ("moe",),
    "moe_shared_expert_intermediate_size": ("moe",),
}


def decoder_pairs(cfg: ModelConfig) -> bool:
    """True for Llama-style stacks where one HF decoder layer is a block pair (``*`` then
    ``-`` or ``E``)."""
    p = cfg.pattern
    return (
        "M" not in p
        and len(p) % 2 == 0
        and all(p[i] == "*" and p[i + 1] in "-E" for i in range(0, len(p), 2))
    )


def hf_layer(cfg: ModelConfig, i: int) -> int:
    """The HF layer index of block ``i``."""
    return i // 2 if decoder_pairs(cfg) else i


def block_label(cfg: ModelConfig, i: int) -> str:
    """``block 5 (mamba2)``; on a Llama-family model ``block 3 (mlp, HF decoder layer 1)``."""
    kind = cfg.layers[i].kind
    if decoder_pairs(cfg):
        return f"block {i} ({kind}, HF decoder layer {i // 2})"
    return f"block {i} ({kind})"


def blocks_of(cfg: ModelConfig, kinds: tuple[str, ...]) -> list[int]:
    """The block indices whose kind is one of ``kinds``."""
    return [i for i, layer in enumerate(cfg.layers) if layer.kind in kinds]


def index_list(idx: list[int], limit: int = 8) -> str:
    """``0, 2, 4`` (long lists shortened: ``0, 2, ..., 30 (16 blocks)``)."""
    if len(idx) <= limit:
        return ", ".join(map(str, idx))
    return f"{', '.join(map(str, idx[:3]))}, ..., {idx[-1]} ({len(idx)} blocks)"


def wrong_kind(cfg: ModelConfig, key: str, i: int) -> str | None:
    """The one-line refusal of the per-block target ``blocks.<i>.<key>`` on a block of the
    wrong kind (None when the kind fits)."""
    kinds = TARGET_KINDS[key]
    if cfg.layers[i].kind in kinds:
        return None
    fits = blocks_of(cfg, kinds)
    where = index_list(fits) if fits else "none in this model"
    return (
        f"target blocks.{i}.{key}: {block_label(cfg, i)} is not a {'/'.join(kinds)} block; "
        f"{key} applies to {'/'.join(kinds)} blocks ({where})"
    )
