"""Host-side helpers for text generation: tokenizers, left padding, shape buckets, models."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxprune.nn.model import HybridLM


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` >= ``n`` (>= ``multiple``): a shape bucket, so
    that prompts of nearby lengths share one compilation."""
    return max(multiple, -(-n // multiple) * multiple)


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int = 0, *, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (tokens (b, T) int32, offset (b,) int32), right-aligned.

    T is the longest length rounded up to ``multiple``; ``offset[i] = T - len(seqs[i])``
    is the number of ``pad_id`` tokens in front of row i (what ``init_cache(offset=...)``
    and ``make_generate``'s ``offset`` expect). Every sequence must be non-empty.
    """
    if not seqs:
        raise ValueError("left_pad: no sequences")
    lengths = [len(s) for s in seqs]
    if min(lengths) < 1:
        raise ValueError("left_pad: every prompt needs at least one token")
    t = round_up(max(lengths), multiple)
    tokens = np.full((len(seqs), t), pad_id, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, t - len(s) :] = np.asarray(s, np.int32)
    return tokens, np.asarray([t - n for n in lengths], np.int32)


def load_tokenizer(path: str | Path):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file or a directory holding one."""
    from jaxprune.converters.api import read_tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path}: no tokenizer.json (pass the model's tokenizer)")
    return read_tokenizer(file)


@dataclasses.dataclass
class LoadedModel:
    """A model with its display name and, when one was found, its tokenizer."""

    model: HybridLM
    name: str
    tokenizer: object | None = None


def resolve_model(spec: str, *, tokenizer: str | None = None, seed: int = 0) -> LoadedModel:
    """``spec``: a preset name from ``jaxprune.presets`` (random weights, built with
    ``seed``), a native checkpoint or an HF directory. The tokenizer is ``tokenizer`` if
    given, else the model directory's ``tokenizer.json`` when it has one."""
    from jaxprune.presets import PRESETS, get_preset

    if spec in PRESETS and not Path(spec).exists():
        from jaxprune.nn.model import init_model

        model = init_model(get_preset(spec), seed)
        name = spec
    else:
        from jaxprune.converters.api import load_model

        model, _ = load_model(spec)
        name = Path(spec).name or spec
    tok = None
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    elif Path(spec).is_dir():
        from jaxprune.converters.api import model_tokenizer

        tok = model_tokenizer(spec)
    return LoadedModel(model, name, tok)
