"""config.json in and out: both Infinity encodings, the family registry, family inference."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from jaxprune.config import (
    AttentionConfig,
    DMCConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
)
from jaxprune.errors import UserError


def _decode_float(obj: dict) -> Any:
    if set(obj) == {"__float__"}:
        return float(obj["__float__"])
    return obj


def read_hf_config(path: str | Path) -> dict:
    """Parse config.json; accepts a bare ``Infinity`` and ``{"__float__": "Infinity"}``."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserError(f"config.json not found: {path}")
    try:
        return json.loads(path.read_text(), object_hook=_decode_float)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not a valid config.json ({e})") from e


def encode_json(obj: Any) -> Any:
    """Non-finite floats -> ``{"__float__": "Infinity"}`` (the transformers v5 form)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")}
    if isinstance(obj, dict):
        return {k: encode_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [encode_json(v) for v in obj]
    return obj


def write_hf_config(cfg: dict, path: Path) -> None:
    path.write_text(json.dumps(encode_json(cfg), indent=2, sort_keys=True, allow_nan=False) + "\n")


#: the key of an HF config.json under which jaxprune keeps what transformers has no field
#: for (transformers ignores unknown keys, so a plain load still works)
EXTRAS_KEY = "jaxprune"


def with_extras(hf: dict, cfg: ModelConfig) -> dict:
    """``hf`` with ``cfg``'s DMC settings under ``config.json["jaxprune"]["dmc"]``
    ({attention block index (str): DMCConfig fields}); a stale entry is dropped."""
    hf = dict(hf)
    extras = {k: v for k, v in dict(hf.pop(EXTRAS_KEY, None) or {}).items() if k != "dmc"}
    dmc = {
        str(i): dataclasses.asdict(layer.dmc)
        for i, layer in enumerate(cfg.layers)
        if isinstance(layer, AttentionConfig) and layer.dmc is not None
    }
    if dmc:
        extras["dmc"] = dmc
    if extras:
        hf[EXTRAS_KEY] = extras
    return hf


def apply_extras(cfg: ModelConfig, hf: dict) -> ModelConfig:
    """``cfg`` (read from ``hf``) with the settings :func:`with_extras` recorded."""
    dmc = (hf.get(EXTRAS_KEY) or {}).get("dmc") or {}
    if not dmc:
        return cfg
    layers = list(cfg.layers)
    for key, fields in dmc.items():
        i = int(key)
        if not (0 <= i < len(layers) and isinstance(layers[i], AttentionConfig)):
            raise UserError(f"config.json: jaxprune.dmc names block {key}, not an attention block")
        layers[i] = dataclasses.replace(layers[i], dmc=DMCConfig(**fields))
    return cfg.replace(layers=tuple(layers))


def infer_model_type(cfg: ModelConfig) -> str:
    """The HF model_type that can express ``cfg`` (for models born in jaxprune)."""
    kinds = {type(x) for x in cfg.layers}
    if kinds == {Mamba2Config}:
        return "mamba2"
    if (
        Mamba2Config in kinds
        or any(isinstance(x, MLPConfig) and x.activation == "relu2" for x in cfg.layers)
        or any(isinstance(x, MoEConfig) and x.router == "sigmoid" for x in cfg.layers)
    ):
        return "nemotron_h"
    attn = next((x for x in cfg.layers if isinstance(x, AttentionConfig)), None)
    if MoEConfig in kinds:
        return "qwen3_moe"
    if attn is not None and attn.qk_norm:
        return "qwen3"
    if attn is not None and attn.qkv_bias and not attn.out_bias:
        return "qwen2"
    return "llama"
