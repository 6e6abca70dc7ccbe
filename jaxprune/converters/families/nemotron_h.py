"""Nemotron-H (``nemotron_h``: M / * / - / E blocks) and pure Mamba2 (``mamba2``).

Both store blocks as ``backbone.layers.{i}.{norm,mixer}``; the Mamba2 mixer tensors are the
same. Behaviour mirrored from transformers 5.24: Nemotron-H clamps dt at ``time_step_min``
on prefill but not on single-token decode; Mamba2 uses ``time_step_limit`` on prefill and no
clamp on decode. Routed experts are written per expert (the NVIDIA on-disk layout).
"""

from __future__ import annotations

import math

from jaxprune.config import (
    INF,
    AttentionConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
)
from jaxprune.converters.families.common import (
    attention_rules,
    expert_rules,
    get,
    head_rules,
    mamba2_rules,
    mlp_rules,
    require,
    uniform_or_raise,
)
from jaxprune.converters.rules import Rule, linear, plain
from jaxprune.errors import UserError

MODEL_TYPES = ("nemotron_h", "mamba2")
ROOT = "backbone"

_BLOCK_CHARS = {
    "mamba": "M",
    "linear_attention": "M",
    "M": "M",
    "attention": "*",
    "full_attention": "*",
    "*": "*",
    "mlp": "-",
    "-": "-",
    "moe": "E",
    "E": "E",
}
_BLOCK_NAMES = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}
_ALIASES = {
    "mamba_n_groups": "n_groups",
    "mamba_d_conv": "conv_kernel",
    "mamba_expand": "expand",
    "mamba_dt_min": "time_step_min",
    "mamba_dt_max": "time_step_max",
    "mamba_dt_limit": "time_step_limit",
    "mamba_dt_init_floor": "time_step_floor",
    "mamba_conv_bias": "use_conv_bias",
    "mamba_chunk_size": "chunk_size",
    "mamba_d_state": "ssm_state_size",
}


def pattern_from_hf(hf: dict) -> str:
    """The block pattern from ``layers_block_type`` (either spelling) or the legacy string."""
    types = hf.get("layers_block_type")
    if types is None and hf.get("hybrid_override_pattern"):
        types = list(hf["hybrid_override_pattern"].replace("|", "").split("/")[0])
    if not types:
        raise UserError("config.json: neither layers_block_type nor hybrid_override_pattern")
    bad = [t for t in types if t not in _BLOCK_CHARS]
    if bad:
        raise UserError(f"config.json: unknown block types {sorted(set(bad))}")
    return "".join(_BLOCK_CHARS[t] for t in types)


def config_from_hf(hf: dict) -> ModelConfig:
    hf = {_ALIASES.get(k, k): v for k, v in hf.items()}
    mamba2_only = hf.get("model_type") == "mamba2"
    d = require(hf, "hidden_size")
    eps = get(hf, "layer_norm_epsilon", "rms_norm_eps", default=1e-5)
    if mamba2_only:
        pattern = "M" * require(hf, "num_hidden_layers")
        heads, head_dim = require(hf, "num_heads"), get(hf, "head_dim", default=64)
        state = get(hf, "state_size", default=128)
        limit = tuple(get(hf, "time_step_limit", default=(0.0, INF)))
        decode_limit = (0.0, INF)
    else:
        pattern = pattern_from_hf(hf)
        heads, head_dim = require(hf, "mamba_num_heads"), require(hf, "mamba_head_dim")
        state = get(hf, "ssm_state_size", default=128)
        limit, decode_limit = (float(get(hf, "time_step_min", default=1e-3)), INF), (0.0, INF)
        if get(hf, "mlp_hidden_act", default="relu2") != "relu2":
            raise UserError(f"nemotron_h: mlp_hidden_act {hf['mlp_hidden_act']!r} unsupported")
        if hf.get("mlp_bias") and "E" in pattern:
            raise UserError("nemotron_h: mlp_bias with MoE blocks is not supported")
    mamba = Mamba2Config(
        num_heads=heads,
        head_dim=head_dim,
        state=state,
        n_groups=get(hf, "n_groups", default=1),
        conv_kernel=get(hf, "conv_kernel", default=4),
        chunk_size=get(hf, "chunk_size", default=256),
        conv_bias=bool(get(hf, "use_conv_bias", default=True)),
        proj_bias=bool(get(hf, "use_bias", default=False)),
        dt_min=get(hf, "time_step_min", default=1e-3),
        dt_max=get(hf, "time_step_max", default=0.1),
        dt_floor=get(hf, "time_step_floor", default=1e-4),
        dt_limit=limit,
        decode_dt_limit=None if decode_limit == limit else decode_limit,
        norm_eps=eps,
    )
    attention = mlp = moe = None
    if "*" in pattern:
        nq = require(hf, "num_attention_heads")
        attention = AttentionConfig(
            num_heads=nq,
            num_kv_heads=get(hf, "num_key_value_heads", default=nq),
            head_dim=get(hf, "head_dim", default=d // nq),
        )
    if "-" in pattern:
        mlp = MLPConfig(require(hf, "intermediate_size"), "relu2", bool(hf.get("mlp_bias")))
    if "E" in pattern:
        moe = MoEConfig(
            num_experts=require(hf, "n_routed_experts"),
            top_k=require(hf, "num_experts_per_tok"),
            intermediate=require(hf, "moe_intermediate_size"),
            activation="relu2",
            router="sigmoid",
            n_group=get(hf, "n_group", default=1),
            topk_group=get(hf, "topk_group", default=1),
            norm_topk_prob=bool(get(hf, "norm_topk_prob", default=True)),
            routed_scaling_factor=float(get(hf, "routed_scaling_factor", default=1.0)),
            shared_intermediate=get(hf, "moe_shared_expert_intermediate_size", default=0),
            latent=hf.get("moe_latent_size"),
        )
    return ModelConfig.from_pattern(
        pattern,
        vocab_size=require(hf, "vocab_size"),
        hidden=d,
        mamba=mamba,
        attention=attention,
        mlp=mlp,
        moe=moe,
        norm_eps=eps,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        name=hf.get("_name_or_path") or hf.get("model_type", "nemotron_h"),
    )


def rules(cfg: ModelConfig) -> list[Rule]:
    d = cfg.hidden
    out: list[Rule] = []
    for i, layer in enumerate(cfg.layers):
        hf, nat = f"{ROOT}.layers.{i}", f"blocks.{i}"
        out.append(plain(f"{hf}.norm.weight", (d,), (f"{nat}.norm.weight", (d,))))
        hf, nat = f"{hf}.mixer", f"{nat}.mixer"
        if isinstance(layer, Mamba2Config):
            out += mamba2_rules(hf, nat, layer, d)
        elif isinstance(layer, AttentionConfig):
            out += attention_rules(hf, nat, layer, d)
        elif isinstance(layer, MLPConfig):
            out += mlp_rules(hf, nat, layer, d)
        else:
            out += _moe_rules(hf, nat, layer, d)
    return out + head_rules(
        cfg.tie_embeddings,
        cfg.vocab_size,
        d,
        f"{ROOT}.embeddings.weight",
        f"{ROOT}.norm_f.weight",
        "lm_head.weight",
    )


def _moe_rules(hf: str, nat: str, c: MoEConfig, d: int) -> list[Rule]:
    e = c.num_experts
    out = [
        linear(f"{hf}.gate.weight", d, (f"{nat}.router", (d, e))),
        plain(f"{hf}.gate.e_score_correction_bias", (e,), (f"{nat}.correction_bias", (e,))),
    ]
    out += expert_rules(f"{hf}.experts", nat, c, d)
    if c.shared_intermediate:
        out += mlp_rules(
            f"{hf}.shared_experts",
            f"{nat}.shared",
            MLPConfig(c.shared_intermediate, c.activation),
            d,
        )
    if c.latent:
        out += [
            linear(f"{hf}.fc1_latent_proj.weight", d, (f"{nat}.latent_in", (d, c.latent))),
            linear(f"{hf}.fc2_latent_proj.weight", c.latent, (f"{nat}.latent_out", (c.latent, d))),
        ]
    return out


def config_to_hf(
    cfg: ModelConfig, template: dict | None, model_type: str, *, per_layer_mlp: bool = False
) -> dict:
    """An HF config for ``cfg``: the template's fields, with every width / count replaced.

    ``per_layer_mlp`` writes ``intermediate_size`` as a list with one width per ``-`` block
    (the form vLLM accepts; transformers cannot load it)."""
    hf = dict(template or {})
    d = cfg.hidden
    ms = [x for x in cfg.layers if isinstance(x, Mamba2Config)]
    m = ms[0] if ms else None
    hf.update(
        vocab_size=cfg.vocab_size,
        hidden_size=d,
        tie_word_embeddings=cfg.tie_embeddings,
        layer_norm_epsilon=cfg.norm_eps,
        model_type=model_type,
    )
    if m is not None:
        # transformers reads I = H * P for Nemotron-H but I = expand * hidden for Mamba2, and its
        # strict config wants an int: exact when possible, else a placeholder (Nemotron-H only).
        exact = m.intermediate % d == 0
        if not exact and model_type == "mamba2":
            raise UserError(
                f"mamba2 export needs num_heads * head_dim ({m.intermediate}) to be "
                f"a multiple of hidden_size ({d}); export as nemotron_h instead"
            )
        expand = m.intermediate // d if exact else max(1, round(m.intermediate / d))
        hf.update(
            n_groups=m.n_groups,
            conv_kernel=m.conv_kernel,
            chunk_size=m.chunk_size,
            use_conv_bias=m.conv_bias,
            use_bias=m.proj_bias,
            expand=expand,
            time_step_min=m.dt_limit[0] if model_type == "nemotron_h" else m.dt_min,
            time_step_max=m.dt_max,
            time_step_floor=m.dt_floor,
        )
    if model_type == "mamba2":
        if cfg.pattern != "M" * len(cfg.layers):
            raise UserError(f"mamba2 export needs only Mamba2 blocks, got pattern {cfg.pattern}")
        hf.update(
            architectures=["Mamba2ForCausalLM"],
            num_hidden_layers=len(cfg.layers),
            num_heads=m.num_heads,
            head_dim=m.head_dim,
            state_size=m.state,
            time_step_limit=list(m.dt_limit),
        )
        return hf
    for k in ("hybrid_override_pattern", "mtp_hybrid_override_pattern"):
        hf.pop(k, None)
    hf.update(
        architectures=["NemotronHForCausalLM"],
        layers_block_type=[_BLOCK_NAMES[c] for c in cfg.pattern],
        num_hidden_layers=len(cfg.layers),
    )
    if m is not None:
        hf.update(mamba_num_heads=m.num_heads, mamba_head_dim=m.head_dim, ssm_state_size=m.state)
    a = next((x for x in cfg.layers if isinstance(x, AttentionConfig)), None)
    if a is not None:
        hf.update(
            num_attention_heads=a.num_heads, num_key_value_heads=a.num_kv_heads, head_dim=a.head_dim
        )
    mlps = [x for x in cfg.layers if isinstance(x, MLPConfig)]
    if mlps:
        widths = [x.intermediate for x in mlps]
        hf.update(intermediate_size=widths if per_layer_mlp else widths[0], mlp_bias=mlps[0].bias)
    e = next((x for x in cfg.layers if isinstance(x, MoEConfig)), None)
    if e is not None:
        hf.update(
            n_routed_experts=e.num_experts,
            num_experts_per_tok=e.top_k,
            moe_intermediate_size=e.intermediate,
            n_group=e.n_group,
            topk_group=e.topk_group,
            norm_topk_prob=e.norm_topk_prob,
            routed_scaling_factor=e.routed_scaling_factor,
            moe_shared_expert_intermediate_size=e.shared_intermediate,
            moe_latent_size=e.latent,
        )
    return hf


def check_exportable(cfg: ModelConfig, model_type: str, *, per_layer_mlp: bool = False) -> None:
    """Refuse configs that the HF model would compute differently (one clear message)."""
    uniform_or_raise(cfg, per_layer_mlp=per_layer_mlp)
    for i, m in enumerate(cfg.layers):
        if not isinstance(m, Mamba2Config):
            continue
        decode = m.dt_limit if m.decode_dt_limit is None else m.decode_dt_limit
        if model_type == "nemotron_h" and (m.dt_limit[0] <= 0 or not math.isinf(m.dt_limit[1])):
            raise UserError(
                f"layer {i} (block {i}, mamba2): transformers' NemotronH clamps dt to "
                f"[time_step_min > 0, inf) on prefill; this model's dt_limit is {m.dt_limit}"
            )
        if decode != (0.0, INF) and decode != (0.0, math.inf):
            raise UserError(
                f"layer {i} (block {i}, mamba2): transformers does not clamp dt on decode; "
                f"decode limit is {decode}"
            )
