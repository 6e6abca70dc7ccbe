"""One small module per architecture family: config mapping and tensor-name rules.

Each family module provides ``MODEL_TYPES``, ``config_from_hf(hf) -> ModelConfig``,
``config_to_hf(cfg, template, model_type) -> dict`` and ``rules(cfg) -> list[Rule]``.
:func:`check_family` says, in one line, why a model cannot be written as a given
``model_type`` (``export --model-type``) before any family code runs.
"""

from __future__ import annotations

import re
from types import ModuleType

from jaxprune.config import AttentionConfig, MLPConfig, ModelConfig, MoEConfig
from jaxprune.converters.families import llama, nemotron_h, qwen3_moe
from jaxprune.errors import UserError

FAMILIES: dict[str, ModuleType] = {
    t: mod for mod in (nemotron_h, llama, qwen3_moe) for t in mod.MODEL_TYPES
}

#: The block patterns each model_type can express (blocks: M mamba, * attention, - MLP, E MoE).
_PATTERNS = {
    **{t: (r"(\*-)+", "(*-)*: attention + MLP decoder layers") for t in llama.MODEL_TYPES},
    "qwen3_moe": (r"(\*[-E])+", "(*-|*E)*: attention + MLP or MoE decoder layers"),
    "nemotron_h": (r"[M*\-E]+", "M, *, - and E blocks"),
    "mamba2": (r"M+", "only Mamba2 blocks (M)"),
}


def family_module(model_type: str) -> ModuleType:
    if model_type not in FAMILIES:
        raise UserError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def _first(cfg: ModelConfig, cls: type):
    return next((x for x in cfg.layers if isinstance(x, cls)), None)


def _mismatch(cfg: ModelConfig, model_type: str) -> str | None:
    """Why ``cfg`` is not a ``model_type`` model, or None."""
    regex, expected = _PATTERNS[model_type]
    if not re.fullmatch(regex, cfg.pattern):
        return f"{model_type} holds {expected}; this model's block pattern is {cfg.pattern!r}"
    a, f, e = _first(cfg, AttentionConfig), _first(cfg, MLPConfig), _first(cfg, MoEConfig)
    decoder = model_type not in nemotron_h.MODEL_TYPES
    if a is not None and decoder and a.rope is None:
        return f"{model_type} attention uses RoPE; this model's attention has none"
    if a is not None and not decoder and (a.rope is not None or a.qk_norm):
        return f"{model_type} attention has no RoPE and no q/k norm; this model's has"
    act = "relu2" if not decoder else "swiglu"
    if f is not None and f.activation != act:
        return f"{model_type} MLPs use {act}; this model's use {f.activation}"
    if e is not None and e.activation != act:
        return f"{model_type} experts use {act}; this model's use {e.activation}"
    router = "sigmoid" if not decoder else "softmax"
    if e is not None and e.router != router:
        return f"{model_type} routers use {router}; this model's uses {e.router}"
    return None


def check_family(cfg: ModelConfig, model_type: str, source: str | None = None) -> ModuleType:
    """The family module of ``model_type``, after checking that ``cfg`` (a ``source``
    family model, when known) can be written as one; raises a one-line UserError."""
    fam = family_module(model_type)
    why = _mismatch(cfg, model_type)
    if why is not None:
        origin = f" (the checkpoint is {source}; omit --model-type to keep it)" if source else ""
        raise UserError(f"cannot export as {model_type}: {why}{origin}")
    return fam
