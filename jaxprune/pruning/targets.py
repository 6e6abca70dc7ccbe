"""Pruning targets in HF config names, validated before any work is done.

Numbering (:mod:`jaxprune.layers`): ``blocks.<i>.<key>`` uses the block index ``i`` of the
``blocks.<i>.`` parameter paths; ``drop_layers`` / ``num_hidden_layers`` count HF layers (a
Nemotron-H block; a Llama decoder layer ``j`` = blocks ``2j`` and ``2j+1``);
``num_<kind>_layers`` keep that many blocks of one kind (:data:`KIND_COUNTS`)."""

from __future__ import annotations

import difflib

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.errors import UserError
from jaxprune.layers import TARGET_KINDS, block_label, decoder_pairs, wrong_kind

KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "mamba_num_heads",
    "mamba_head_dim",
    "n_routed_experts",
    "moe_intermediate_size",
    "moe_shared_expert_intermediate_size",
    "num_hidden_layers",
    "drop_layers",
    "num_mamba_layers",
    "num_mlp_layers",
    "num_attention_layers",
    "num_moe_layers",
)

#: MiniPuzzle-style block counts per kind (jaxprune's names, not HF config fields): the
#: lowest-ranked blocks of that kind are dropped, each kind on its own (Nemotron-H stacks).
KIND_COUNTS = {
    "num_mamba_layers": "mamba2",
    "num_mlp_layers": "mlp",
    "num_attention_layers": "attention",
    "num_moe_layers": "moe",
}


#: Targets that may also be given for one block as ``blocks.<i>.<key>`` (heterogeneous).
PER_BLOCK = KEYS[1:9]


def target_for(targets: dict, i: int, key: str):
    """The target of ``key`` for block ``i``: its per-block value, else the uniform one."""
    return targets.get(f"blocks.{i}.{key}", targets.get(key))


def parse_targets(text: str) -> dict:
    """``"hidden_size=3072,mamba_num_heads=112,drop_layers=3;7,blocks.5.intermediate_size=96"``
    -> dict. Uniform targets apply to every block of that kind (HF-exportable); a
    ``blocks.<i>.`` key overrides one block (per-layer widths: not loadable by transformers).
    """
    out: dict = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise UserError(f"target {item!r} is not key=value")
        check_key(key)
        try:
            if key == "drop_layers":
                out[key] = [int(v) for v in value.replace(";", " ").split()]
            else:
                out[key] = int(value)
        except ValueError as e:
            raise UserError(f"target {key}: {value!r} is not an integer") from e
    if not out:
        raise UserError("no pruning targets given")
    return out


def decoder_layers(cfg: ModelConfig) -> bool:
    """True for Llama-style stacks where one HF layer is the block pair (*, - or E)."""
    return decoder_pairs(cfg)


def check_key(key: str) -> None:
    """UserError for a key that is no target, naming the close match and the valid keys."""
    base = key.split(".")[-1] if key.startswith("blocks.") else key
    if base in KEYS and (
        base == key or (base in PER_BLOCK and key.count(".") == 2 and key.split(".")[1].isdigit())
    ):
        return
    close = difflib.get_close_matches(base, KEYS, n=1)
    hint = ""
    if close:
        hint = f" (did you mean {key[: len(key) - len(base)] + close[0]!r}?)"
    raise UserError(
        f"unknown target {key!r}{hint}; known: {', '.join(KEYS)} (per block: "
        f"blocks.<i>.<{'|'.join(PER_BLOCK)}>)"
    )


def check_keys(targets: dict) -> None:
    """UserError for an unknown key or a value that is not an integer (a list of layer
    indices for ``drop_layers``)."""
    if not isinstance(targets, dict):
        raise UserError(f"targets must be a dict of HF config names, got {type(targets).__name__}")
    for key, v in targets.items():
        check_key(str(key))
        vals = v if key == "drop_layers" and isinstance(v, (list, tuple)) else [v]
        if key == "drop_layers" and not isinstance(v, (list, tuple)):
            raise UserError(f"target drop_layers must be a list of layer indices, got {v!r}")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
            raise UserError(f"target {key}: {v!r} is not an integer")


def validate_targets(cfg: ModelConfig, targets: dict) -> None:
    """Raise one clear UserError for any target that cannot be applied to ``cfg`` (an
    unknown key, a value out of range, a layer that does not exist)."""
    check_keys(targets)

    def each(kind, attr):
        return [getattr(x, attr) for x in cfg.layers if isinstance(x, kind)]

    def check(key: str, sources: list[int], extra=None) -> None:
        if key not in targets:
            return
        v = targets[key]
        if not sources:
            kinds = "/".join(TARGET_KINDS.get(key, ("such",)))
            raise UserError(f"target {key}: the model has no {kinds} blocks ({cfg.pattern!r})")
        if v <= 0:
            raise UserError(f"target {key}={v} must be positive")
        if v > min(sources):
            raise UserError(f"target {key}={v} is larger than the source ({min(sources)})")
        if extra:
            extra(v)

    for key in targets:
        if key.startswith("blocks."):
            _validate_block_target(cfg, key, targets)
    check("hidden_size", [cfg.hidden])
    check("intermediate_size", each(MLPConfig, "intermediate"))
    kv = each(AttentionConfig, "num_kv_heads")

    kv_target = targets.get("num_key_value_heads")

    def heads_ok(v):
        bad = [k for k in kv if v % (kv_target or k)]
        if bad:
            raise UserError(
                f"num_attention_heads={v} is not a multiple of num_key_value_heads "
                f"{kv_target or bad[0]}"
            )

    check("num_attention_heads", each(AttentionConfig, "num_heads"), heads_ok)
    check("num_key_value_heads", kv)  # explicit KV-group pruning: whole groups go
    groups = each(Mamba2Config, "n_groups")

    def mamba_ok(v):
        bad = [g for g in groups if v % g]
        if bad:
            raise UserError(f"mamba_num_heads={v} is not a multiple of n_groups={bad[0]}")

    check("mamba_num_heads", each(Mamba2Config, "num_heads"), mamba_ok)
    check("mamba_head_dim", each(Mamba2Config, "head_dim"))
    moes = [x for x in cfg.layers if isinstance(x, MoEConfig)]

    def experts_ok(v):
        for m in moes:
            if v % m.n_group or v < m.top_k or v // m.n_group * m.topk_group < m.top_k:
                raise UserError(
                    f"n_routed_experts={v} must be a multiple of n_group="
                    f"{m.n_group} and leave top_k={m.top_k} experts routable"
                )

    check("n_routed_experts", [m.num_experts for m in moes], experts_ok)
    check("moe_intermediate_size", [m.intermediate for m in moes])
    check(
        "moe_shared_expert_intermediate_size",
        [m.shared_intermediate for m in moes if m.shared_intermediate],
    )
    pairs = decoder_layers(cfg)
    n_layers = len(cfg.layers) // 2 if pairs else len(cfg.layers)
    check("num_hidden_layers", [n_layers])
    for i in targets.get("drop_layers", []):
        if not 0 <= i < n_layers:
            what = "HF decoder layers, layer j = blocks 2j, 2j+1" if pairs else "blocks"
            raise UserError(f"drop_layers: layer {i} does not exist (0..{n_layers - 1}; {what})")
    if "drop_layers" in targets and "num_hidden_layers" in targets:
        raise UserError("give num_hidden_layers or drop_layers, not both")
    per_kind = [k for k in KIND_COUNTS if k in targets]
    if per_kind and pairs:
        raise UserError(f"{per_kind[0]}: per-kind block counts need a Nemotron-H-style stack")
    if per_kind and ("drop_layers" in targets or "num_hidden_layers" in targets):
        raise UserError(f"give {per_kind[0]} or num_hidden_layers / drop_layers, not both")
    for key in per_kind:
        have = sum(x.kind == KIND_COUNTS[key] for x in cfg.layers)
        if not 0 <= targets[key] <= have:
            raise UserError(f"target {key}={targets[key]}: the model has {have} such blocks")


def _validate_block_target(cfg: ModelConfig, key: str, targets: dict) -> None:
    """``blocks.<i>.<base>``: the block exists, has the kind the target applies to, and the
    value fits it (with the block's other targets: KV groups and heads go together); every
    refusal names the block as :func:`~jaxprune.layers.block_label`."""
    value = targets[key]
    _, idx, base = key.split(".")
    i = int(idx)
    if i >= len(cfg.layers):
        raise UserError(f"target {key}: block {i} does not exist (blocks 0..{len(cfg.layers) - 1})")
    bad = wrong_kind(cfg, base, i)
    if bad:
        raise UserError(bad)
    try:
        own = {k.split(".")[2]: v for k, v in targets.items() if k.startswith(f"blocks.{i}.")}
        validate_targets(cfg.replace(layers=(cfg.layers[i],)), {**own, base: value})
    except UserError as e:
        raise UserError(f"target {key} ({block_label(cfg, i)}): {e}") from e
