"""The one model resolver: a spec -> a model, its tokenizer and where it came from.

A spec is, in this order:

1. a directory: a native checkpoint (holds ``jaxprune.json``) or an HF / PyTorch model
   directory (holds ``config.json``), loaded with its weights;
2. a file: a :class:`~jaxprune.config.ModelConfig` JSON (``ModelConfig.to_dict``; a bare
   ``Infinity`` or ``{"__float__": "Infinity"}`` both decode), random weights from ``seed``;
3. a preset name from :mod:`jaxprune.presets` (when no such path exists), random weights.

The tokenizer is the override when given, else the model directory's own
(:func:`jaxprune.tokenizer.model_tokenizer`, special ids from its files); presets and config
JSON files have none. Every bad spec is a one-line :class:`~jaxprune.errors.UserError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jaxprune.config import ModelConfig
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.tokenizer import Tokenizer, load_tokenizer, model_tokenizer


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A resolved model.

    family / hf_config: the HF ``model_type`` and config of the source (None for models born
    in jaxprune); source: the directory the model came from, whose tokenizer and generation
    files travel with outputs (None for presets and config JSON files).
    """

    model: HybridLM
    tokenizer: Tokenizer | None
    family: str | None
    hf_config: dict | None
    source: Path | None
    name: str

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def resolve_model(
    spec: str | Path,
    *,
    tokenizer: str | Path | None = None,
    seed: int = 0,
    with_tokenizer: bool = True,
    budget: float | None = None,
) -> LoadedModel:
    """The model ``spec`` names (module docstring) with its tokenizer.

    ``tokenizer``: a ``tokenizer.json`` or a directory holding one, instead of the model's.
    ``with_tokenizer=False`` reads no tokenizer (e.g. for token-id data). ``budget``: ``spec``
    is an elastic checkpoint (``jaxprune elastic``) and this trained budget's child is
    sliced out of it at load time.
    """
    kind, path = _locate(spec)
    family = hf_config = source = None
    if budget is not None:
        from jaxprune.elastic.run import load_elastic

        if kind != "dir":
            raise UserError(f"--budget needs an elastic checkpoint directory, got {spec!r}")
        e = load_elastic(path)
        model, family, source = e.child(budget), e.meta.get("family"), path
    elif kind == "dir":
        from jaxprune.converters.api import load_model

        resolve_config(path)  # a malformed config: a one-line UserError before any weights
        model, meta = load_model(path)
        family, hf_config, source = meta.get("family"), meta.get("hf_config"), path
    else:
        from jaxprune.nn.model import init_model

        model = init_model(_config_of(kind, path, str(spec)), seed)
    tok = None
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    elif with_tokenizer and source is not None:
        tok = model_tokenizer(source)
    return LoadedModel(model, tok, family, hf_config, source, _name(kind, path, str(spec)))


def resolve_config(spec: str | Path) -> ModelConfig:
    """The model config of ``spec`` (same specs as :func:`resolve_model`), no weights read."""
    kind, path = _locate(spec)
    if kind != "dir":
        return _config_of(kind, path, str(spec))
    from jaxprune.converters.native import is_native, read_meta

    try:
        if is_native(path):
            return read_meta(path)[0]
        from jaxprune.converters.api import read_hf

        return read_hf(path)[0]
    except UserError:
        raise
    except ValueError as e:  # malformed config files
        raise UserError(str(e).splitlines()[0] if str(e) else f"{path}: bad config") from e


def _locate(spec: str | Path) -> tuple[str, Path | None]:
    """("dir" | "file" | "preset", path or None); UserError for anything else."""
    from jaxprune.presets import PRESETS

    path = Path(spec)
    if path.is_dir():
        if (path / "jaxprune.json").is_file() or (path / "config.json").is_file():
            return "dir", path
        raise UserError(
            f"{path}: neither a jaxprune checkpoint (jaxprune.json) nor an HF model directory "
            "(config.json)"
        )
    if path.is_file():
        return "file", path
    if str(spec) in PRESETS:
        return "preset", None
    raise UserError(
        f"{spec}: not found: no model directory, and neither a config JSON file nor a preset "
        f"(unknown preset; choose from {', '.join(PRESETS)})"
    )


def _config_of(kind: str, path: Path | None, spec: str) -> ModelConfig:
    if kind == "preset":
        from jaxprune.presets import get_preset

        return get_preset(spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_hook=_float_hook)
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return ModelConfig.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"bad model config {path}: {detail}") from e


def _float_hook(obj: dict):
    """``{"__float__": "Infinity"}`` (how native files write non-finite floats) -> float."""
    return float(obj["__float__"]) if set(obj) == {"__float__"} else obj


def _name(kind: str, path: Path | None, spec: str) -> str:
    if kind == "preset":
        return spec
    return (path.stem if kind == "file" else path.resolve().name) or spec


__all__ = ["LoadedModel", "resolve_config", "resolve_model"]
