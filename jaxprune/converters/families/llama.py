"""Llama, Mistral, Qwen2 and Qwen3 (``model.layers.{i}.{self_attn,mlp}``).

Each HF decoder layer becomes two blocks: ``*`` (input_layernorm + self_attn) and ``-``
(post_attention_layernorm + SwiGLU mlp). RoPE comes from ``rope_parameters`` (transformers
v5) or the older ``rope_theta`` + ``rope_scaling``.
"""

from __future__ import annotations

from jaxprune.config import AttentionConfig, MLPConfig, ModelConfig, RopeConfig
from jaxprune.converters.families.common import (
    attention_rules,
    get,
    head_rules,
    mlp_rules,
    require,
    uniform_or_raise,
)
from jaxprune.converters.rules import Rule, plain
from jaxprune.errors import UserError

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ARCH = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def rope_from_hf(hf: dict, head_dim: int) -> RopeConfig:
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = get(params, "rope_theta", default=get(hf, "rope_theta", default=10000.0))
    kind = get(
        params, "rope_type", "type", default=get(scaling, "rope_type", "type", default="default")
    )
    src = params if params.get("factor") is not None else scaling
    partial = get(
        params, "partial_rotary_factor", default=get(hf, "partial_rotary_factor", default=1.0)
    )
    rotary = int(head_dim * partial)
    if kind not in ("default", "llama3"):
        raise UserError(f"rope_type {kind!r} is not supported (default, llama3)")
    kw = {}
    if kind == "llama3":
        kw = dict(
            factor=float(src["factor"]),
            low_freq_factor=float(src["low_freq_factor"]),
            high_freq_factor=float(src["high_freq_factor"]),
            original_max_position=int(src["original_max_position_embeddings"]),
        )
    return RopeConfig(
        theta=float(theta), rotary_dim=None if rotary == head_dim else rotary, scaling=kind, **kw
    )


def rope_to_hf(rope: RopeConfig, head_dim: int) -> dict:
    p: dict = {"rope_theta": rope.theta, "rope_type": rope.scaling}
    if rope.scaling == "llama3":
        p.update(
            factor=rope.factor,
            low_freq_factor=rope.low_freq_factor,
            high_freq_factor=rope.high_freq_factor,
            original_max_position_embeddings=rope.original_max_position,
        )
    if rope.rotary_dim is not None:
        p["partial_rotary_factor"] = rope.rotary_dim / head_dim
    return p


def _sliding_window(hf: dict, i: int) -> int | None:
    mt = hf.get("model_type")
    window = hf.get("sliding_window")
    if not window:
        return None
    if mt == "mistral":
        return int(window)
    if not hf.get("use_sliding_window"):
        return None
    types = hf.get("layer_types")
    if types:
        return int(window) if types[i] == "sliding_attention" else None
    return int(window) if i >= hf.get("max_window_layers", 0) else None


def attention_from_hf(hf: dict, i: int) -> AttentionConfig:
    mt = hf["model_type"]
    nq = require(hf, "num_attention_heads")
    head_dim = get(hf, "head_dim", default=require(hf, "hidden_size") // nq)
    bias = bool(hf.get("attention_bias", False))
    return AttentionConfig(
        num_heads=nq,
        num_kv_heads=get(hf, "num_key_value_heads", default=nq),
        head_dim=head_dim,
        rope=rope_from_hf(hf, head_dim),
        qk_norm=mt in ("qwen3", "qwen3_moe"),
        qkv_bias=True if mt == "qwen2" else bias,
        out_bias=bias and mt != "qwen2",
        norm_eps=get(hf, "rms_norm_eps", default=1e-6),
        sliding_window=_sliding_window(hf, i),
    )


def config_from_hf(hf: dict) -> ModelConfig:
    if hf.get("hidden_act", "silu") != "silu":
        raise UserError(f"{hf['model_type']}: hidden_act {hf['hidden_act']!r} unsupported")
    mlp = MLPConfig(require(hf, "intermediate_size"), "swiglu", bool(hf.get("mlp_bias", False)))
    layers = []
    for i in range(require(hf, "num_hidden_layers")):
        layers += [attention_from_hf(hf, i), mlp]
    return ModelConfig(
        vocab_size=require(hf, "vocab_size"),
        hidden=require(hf, "hidden_size"),
        layers=tuple(layers),
        norm_eps=get(hf, "rms_norm_eps", default=1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        name=hf.get("_name_or_path") or hf["model_type"],
    )


def decoder_layer_rules(cfg: ModelConfig, i: int, mixer_rules) -> list[Rule]:
    """Rules of HF decoder layer i = blocks 2i (attention) and 2i+1 (MLP / MoE)."""
    d = cfg.hidden
    hf = f"model.layers.{i}"
    a, b = 2 * i, 2 * i + 1
    out = [
        plain(f"{hf}.input_layernorm.weight", (d,), (f"blocks.{a}.norm.weight", (d,))),
        plain(f"{hf}.post_attention_layernorm.weight", (d,), (f"blocks.{b}.norm.weight", (d,))),
    ]
    out += attention_rules(f"{hf}.self_attn", f"blocks.{a}.mixer", cfg.layers[a], d)
    return out + mixer_rules(f"{hf}.mlp", f"blocks.{b}.mixer", cfg.layers[b], d)


def check_pairs(cfg: ModelConfig, second: str = "-") -> int:
    """The number of decoder layers; the pattern must be (``*`` then ``-``/``E``) repeated."""
    p = cfg.pattern
    if len(p) % 2 or any(p[2 * i] != "*" or p[2 * i + 1] not in second for i in range(len(p) // 2)):
        raise UserError(f"a decoder-layer model needs the pattern (*{second})*, got {p!r}")
    return len(p) // 2


def rules(cfg: ModelConfig) -> list[Rule]:
    return decoder_stack_rules(cfg, mlp_rules)


def decoder_stack_rules(cfg: ModelConfig, ffn_rules, second: str = "-") -> list[Rule]:
    """Every decoder layer (attention + ``ffn_rules``), then embeddings, final norm, head."""
    out = []
    for i in range(check_pairs(cfg, second)):
        out += decoder_layer_rules(cfg, i, ffn_rules)
    return out + head_rules(
        cfg.tie_embeddings,
        cfg.vocab_size,
        cfg.hidden,
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    )


def attention_to_hf(hf: dict, a: AttentionConfig, model_type: str) -> None:
    hf.update(
        num_attention_heads=a.num_heads, num_key_value_heads=a.num_kv_heads, head_dim=a.head_dim
    )
    if model_type != "qwen2":
        hf["attention_bias"] = a.qkv_bias
    if a.rope is not None:
        hf["rope_parameters"] = rope_to_hf(a.rope, a.head_dim)
        hf.pop("rope_scaling", None)
        hf.pop("rope_theta", None)


def config_to_hf(cfg: ModelConfig, template: dict | None, model_type: str) -> dict:
    n = check_pairs(cfg)
    hf = dict(template or {})
    a, f = cfg.layers[0], cfg.layers[1]
    hf.update(
        model_type=model_type,
        architectures=[_ARCH[model_type]],
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=n,
        intermediate_size=f.intermediate,
        mlp_bias=f.bias,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_act="silu",
    )
    attention_to_hf(hf, a, model_type)
    if model_type == "qwen2":
        hf.pop("mlp_bias", None)
    if "layer_types" in hf:
        hf["layer_types"] = [
            "sliding_attention" if x.sliding_window else "full_attention" for x in cfg.layers[::2]
        ]
    return hf


def check_exportable(cfg: ModelConfig, model_type: str) -> None:
    uniform_or_raise(cfg)
    a = cfg.layers[0]
    if a.rope is None:
        raise UserError(f"{model_type} export needs RoPE attention")
    if model_type == "qwen2" and not (a.qkv_bias and not a.out_bias):
        raise UserError("qwen2 export needs q/k/v bias and no o_proj bias")
    if model_type != "qwen2" and a.qkv_bias != a.out_bias:
        raise UserError(f"{model_type}: attention_bias covers q, k, v and o together")
    if a.qk_norm != (model_type in ("qwen3", "qwen3_moe")):
        raise UserError(f"{model_type}: q/k norm {'missing' if not a.qk_norm else 'unexpected'}")
