"""Tiny word-level tokenizers with ids known by hand (for tests of data and special ids)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def word_tokenizer(words: Sequence[str]):
    """A whitespace ``tokenizers.Tokenizer`` whose id of ``words[i]`` is i (``words[0]`` is
    the unknown token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def write_tokenizer(model_dir: str | Path, words: Sequence[str]) -> Path:
    """Save :func:`word_tokenizer` as ``model_dir/tokenizer.json``; returns the file."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    file = model_dir / "tokenizer.json"
    word_tokenizer(words).save(str(file))
    return file
