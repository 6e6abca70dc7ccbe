"""Qwen3-MoE: Qwen3 attention; each layer's ``mlp`` is a softmax top-k MoE of SwiGLU experts,
or a dense SwiGLU MLP on ``mlp_only_layers`` / off the ``decoder_sparse_step`` grid."""

from __future__ import annotations

from jaxprune.config import MLPConfig, ModelConfig, MoEConfig
from jaxprune.converters.families.common import expert_rules, get, mlp_rules, require
from jaxprune.converters.families.llama import (
    attention_from_hf,
    attention_to_hf,
    check_pairs,
    decoder_stack_rules,
)
from jaxprune.converters.families.llama import check_exportable as _check_attention
from jaxprune.converters.rules import Rule, linear
from jaxprune.errors import UserError

MODEL_TYPES = ("qwen3_moe",)


def _is_sparse(hf: dict, i: int) -> bool:
    step = get(hf, "decoder_sparse_step", default=1)
    return i not in (hf.get("mlp_only_layers") or []) and (i + 1) % step == 0


def config_from_hf(hf: dict) -> ModelConfig:
    moe = MoEConfig(
        num_experts=require(hf, "num_experts", "num_local_experts"),
        top_k=require(hf, "num_experts_per_tok"),
        intermediate=require(hf, "moe_intermediate_size"),
        activation="swiglu",
        router="softmax",
        norm_topk_prob=bool(get(hf, "norm_topk_prob", default=False)),
    )
    dense = MLPConfig(require(hf, "intermediate_size"), "swiglu")
    layers = []
    for i in range(require(hf, "num_hidden_layers")):
        layers += [attention_from_hf(hf, i), moe if _is_sparse(hf, i) else dense]
    return ModelConfig(
        vocab_size=require(hf, "vocab_size"),
        hidden=require(hf, "hidden_size"),
        layers=tuple(layers),
        norm_eps=get(hf, "rms_norm_eps", default=1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        name=hf.get("_name_or_path") or "qwen3_moe",
    )


def _ffn_rules(hf: str, nat: str, c, d: int) -> list[Rule]:
    if isinstance(c, MLPConfig):
        return mlp_rules(hf, nat, c, d)
    return [
        linear(f"{hf}.gate.weight", d, (f"{nat}.router", (d, c.num_experts))),
        *expert_rules(f"{hf}.experts", nat, c, d),
    ]


def rules(cfg: ModelConfig) -> list[Rule]:
    return decoder_stack_rules(cfg, _ffn_rules, "-E")


def config_to_hf(cfg: ModelConfig, template: dict | None, model_type: str) -> dict:
    n = check_pairs(cfg, "-E")
    hf = dict(template or {})
    ffn = cfg.layers[1::2]
    moes = [f for f in ffn if isinstance(f, MoEConfig)]
    dense = [f for f in ffn if isinstance(f, MLPConfig)]
    hf.update(
        model_type=model_type,
        architectures=["Qwen3MoeForCausalLM"],
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=n,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        decoder_sparse_step=1,
        hidden_act="silu",
        mlp_only_layers=[i for i, f in enumerate(ffn) if isinstance(f, MLPConfig)],
    )
    hf.pop("num_local_experts", None)
    if moes:
        m = moes[0]
        hf.update(
            num_experts=m.num_experts,
            num_experts_per_tok=m.top_k,
            moe_intermediate_size=m.intermediate,
            norm_topk_prob=m.norm_topk_prob,
        )
    if dense:
        hf["intermediate_size"] = dense[0].intermediate
    attention_to_hf(hf, cfg.layers[0], model_type)
    return hf


def check_exportable(cfg: ModelConfig, model_type: str) -> None:
    _check_attention(cfg, model_type)
    for i, f in enumerate(cfg.layers[1::2]):
        if isinstance(f, MoEConfig) and (
            f.router != "softmax"
            or f.activation != "swiglu"
            or f.shared_intermediate
            or f.latent
            or f.routed_scaling_factor != 1.0
        ):
            raise UserError(
                f"qwen3_moe: layer {i} (moe = block {2 * i + 1}) is not a plain softmax SwiGLU MoE"
            )
