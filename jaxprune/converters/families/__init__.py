"""One small module per architecture family: config mapping and tensor-name rules.

Each family module provides ``MODEL_TYPES``, ``config_from_hf(hf) -> ModelConfig``,
``config_to_hf(cfg, template, model_type) -> dict`` and ``rules(cfg) -> list[Rule]``.
"""

from __future__ import annotations

from types import ModuleType

from jaxprune.converters.families import llama, nemotron_h, qwen3_moe
from jaxprune.errors import UserError

FAMILIES: dict[str, ModuleType] = {
    t: mod for mod in (nemotron_h, llama, qwen3_moe) for t in mod.MODEL_TYPES
}


def family_module(model_type: str) -> ModuleType:
    if model_type not in FAMILIES:
        raise UserError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]
