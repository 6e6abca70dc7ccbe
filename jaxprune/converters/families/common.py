"""Rule builders shared by the families: Mamba2 mixer, attention, MLP, routed experts."""

from __future__ import annotations

import dataclasses

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, MoEConfig
from jaxprune.converters.rules import Rule, conv, linear, plain
from jaxprune.errors import UserError
from jaxprune.layers import decoder_pairs


def mamba2_rules(hf: str, nat: str, c: Mamba2Config, d: int) -> list[Rule]:
    """HF fused ``in_proj`` [z | x | B | C | dt] and ``conv1d`` [x | B | C] -> split params."""
    h, p, n, g, k = c.num_heads, c.head_dim, c.state, c.n_groups, c.conv_kernel
    hp, gn = (h, p), (g, n)
    i = h * p
    rules = [
        linear(
            f"{hf}.in_proj.weight",
            d,
            (f"{nat}.z_proj", (d, *hp)),
            (f"{nat}.x_proj", (d, *hp)),
            (f"{nat}.B_proj", (d, *gn)),
            (f"{nat}.C_proj", (d, *gn)),
            (f"{nat}.dt_proj", (d, h)),
        ),
        conv(
            f"{hf}.conv1d.weight",
            k,
            (f"{nat}.conv_x", (k, *hp)),
            (f"{nat}.conv_B", (k, *gn)),
            (f"{nat}.conv_C", (k, *gn)),
        ),
        plain(f"{hf}.A_log", (h,), (f"{nat}.A_log", (h,))),
        plain(f"{hf}.D", (h,), (f"{nat}.D", (h,))),
        plain(f"{hf}.dt_bias", (h,), (f"{nat}.dt_bias", (h,))),
        plain(f"{hf}.norm.weight", (i,), (f"{nat}.norm", hp)),
        linear(f"{hf}.out_proj.weight", i, (f"{nat}.out_proj", (*hp, d))),
    ]
    if c.conv_bias:
        rules.append(
            plain(
                f"{hf}.conv1d.bias",
                (c.conv_dim,),
                (f"{nat}.conv_x_bias", hp),
                (f"{nat}.conv_B_bias", gn),
                (f"{nat}.conv_C_bias", gn),
            )
        )
    if c.proj_bias:
        rules += [
            plain(
                f"{hf}.in_proj.bias",
                (2 * i + 2 * g * n + h,),
                (f"{nat}.z_proj_bias", hp),
                (f"{nat}.x_proj_bias", hp),
                (f"{nat}.B_proj_bias", gn),
                (f"{nat}.C_proj_bias", gn),
                (f"{nat}.dt_proj_bias", (h,)),
            ),
            plain(f"{hf}.out_proj.bias", (d,), (f"{nat}.out_proj_bias", (d,))),
        ]
    return rules


def attention_rules(hf: str, nat: str, c: AttentionConfig, d: int) -> list[Rule]:
    hq, hkv, dh = c.num_heads, c.num_kv_heads, c.head_dim
    rules = [
        linear(f"{hf}.q_proj.weight", d, (f"{nat}.q_proj", (d, hq, dh))),
        linear(f"{hf}.k_proj.weight", d, (f"{nat}.k_proj", (d, hkv, dh))),
        linear(f"{hf}.v_proj.weight", d, (f"{nat}.v_proj", (d, hkv, dh))),
        linear(f"{hf}.o_proj.weight", hq * dh, (f"{nat}.o_proj", (hq, dh, d))),
    ]
    if c.qkv_bias:
        for name, heads in (("q", hq), ("k", hkv), ("v", hkv)):
            rules.append(
                plain(f"{hf}.{name}_proj.bias", (heads * dh,), (f"{nat}.{name}_bias", (heads, dh)))
            )
    if c.out_bias:
        rules.append(plain(f"{hf}.o_proj.bias", (d,), (f"{nat}.o_bias", (d,))))
    if c.qk_norm:
        rules += [
            plain(f"{hf}.q_norm.weight", (dh,), (f"{nat}.q_norm", (dh,))),
            plain(f"{hf}.k_norm.weight", (dh,), (f"{nat}.k_norm", (dh,))),
        ]
    return rules


def mlp_rules(hf: str, nat: str, c: MLPConfig, d: int) -> list[Rule]:
    f = c.intermediate
    names = ["up", "gate"] if c.activation == "swiglu" else ["up"]
    rules = [linear(f"{hf}.{n}_proj.weight", d, (f"{nat}.{n}_proj", (d, f))) for n in names]
    rules.append(linear(f"{hf}.down_proj.weight", f, (f"{nat}.down_proj", (f, d))))
    if c.bias:
        rules += [plain(f"{hf}.{n}_proj.bias", (f,), (f"{nat}.{n}_bias", (f,))) for n in names]
        rules.append(plain(f"{hf}.down_proj.bias", (d,), (f"{nat}.down_bias", (d,))))
    return rules


def expert_rules(hf: str, nat: str, c: MoEConfig, d: int) -> list[Rule]:
    """Per-expert HF tensors ``{hf}.{j}.{up,gate,down}_proj.weight`` -> stacked (E, ...)."""
    de, f = c.latent or d, c.intermediate
    names = ["up", "gate"] if c.activation == "swiglu" else ["up"]
    rules = []
    for j in range(c.num_experts):
        for n in names:
            rules.append(
                linear(f"{hf}.{j}.{n}_proj.weight", de, (f"{nat}.{n}_proj", (de, f)), expert=j)
            )
        rules.append(
            linear(f"{hf}.{j}.down_proj.weight", f, (f"{nat}.down_proj", (f, de)), expert=j)
        )
    return rules


def head_rules(tie: bool, vocab: int, d: int, embed: str, norm: str, head: str) -> list[Rule]:
    rules = [
        plain(embed, (vocab, d), ("embed", (vocab, d))),
        plain(norm, (d,), ("final_norm.weight", (d,))),
    ]
    if not tie:
        rules.append(linear(head, d, ("lm_head", (d, vocab))))
    return rules


def get(hf: dict, *names: str, default=None):
    """The first of ``names`` present (and not None) in the HF config dict."""
    for n in names:
        if hf.get(n) is not None:
            return hf[n]
    return default


def require(hf: dict, *names: str):
    v = get(hf, *names)
    if v is None:
        raise UserError(f"config.json: missing required field {names[0]!r}")
    return v


def uniform_or_raise(cfg, *, per_layer_mlp: bool = False) -> None:
    """Raise naming the layers whose config differs from the first block of the same kind.

    ``per_layer_mlp`` lets MLP widths differ (written as a per-layer list)."""
    first: dict[str, tuple[int, object]] = {}
    bad = []
    for i, layer in enumerate(cfg.layers):
        if isinstance(layer, AttentionConfig):  # HF configs do express per-layer windows,
            # and per-block DMC settings go under config.json's "jaxprune" key
            layer = dataclasses.replace(layer, sliding_window=None, dmc=None)
        if per_layer_mlp and isinstance(layer, MLPConfig):
            layer = dataclasses.replace(layer, intermediate=1)
        j, ref = first.setdefault(layer.kind, (i, layer))
        if layer != ref:
            bad.append(_differs(cfg, i, j, layer.kind))
    if bad:
        raise UserError(
            "per-layer widths differ and an HF config holds one per block kind: layers "
            + ", ".join(bad)
        )


def _differs(cfg, i: int, j: int, kind: str) -> str:
    """HF layer numbering, with the block index of ``blocks.<i>.`` where they differ
    (Llama-family: decoder layer ``i // 2`` holds block ``i``; see :mod:`jaxprune.layers`)."""
    if decoder_pairs(cfg):
        return f"{i // 2} ({kind} = block {i}, differs from layer {j // 2} = block {j})"
    return f"{i} ({kind}, differs from layer {j})"
