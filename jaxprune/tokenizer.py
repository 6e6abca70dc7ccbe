"""The model's tokenizer and its special token ids.

A model directory's tokenizer is its ``tokenizer.json`` (the HF ``tokenizers`` format).
Its special ids (EOS, BOS, pad) come from the directory's own files; each id is taken from
the first of these that declares it:

1. ``generation_config.json``: ``eos_token_id`` (an integer, or a list: the first is taken),
   ``bos_token_id``, ``pad_token_id``;
2. ``tokenizer_config.json``: ``eos_token`` / ``bos_token`` / ``pad_token``, a string or a
   ``{"content": ...}`` dict, looked up in the tokenizer's vocabulary (a token missing from
   the vocabulary counts as not declared);
3. the model config: ``config.json`` (for a native checkpoint, the HF config kept in
   ``jaxprune.json``) with ``eos_token_id`` / ``bos_token_id`` / ``pad_token_id``;
4. EOS only, a guess: the first of :data:`EOS_CANDIDATES` in the vocabulary.

A negative id or ``null`` counts as not declared (old configs write ``pad_token_id: -1``);
an id outside the tokenizer's vocabulary, a value of the wrong type or an unreadable file is
a :class:`~jaxprune.errors.UserError`. A ``tokenizers.Tokenizer`` built in Python (no
directory) gets only the guess (:func:`as_tokenizer`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxprune.errors import UserError

#: Special tokens guessed, in this order, as EOS when no file of the model declares one.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")
SPECIALS = ("eos", "bos", "pad")


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """A ``tokenizers.Tokenizer`` (``raw``) with the model's special token ids.

    ``encode`` / ``encode_batch`` add no special tokens unless asked (data is read plain;
    prompts for generation ask for the tokenizer's own template, e.g. a BOS).
    """

    raw: Any
    eos_id: int | None = None
    bos_id: int | None = None
    pad_id: int | None = None

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self.raw.encode(text, add_special_tokens=add_special_tokens).ids)

    def encode_batch(
        self, texts: Sequence[str], *, add_special_tokens: bool = False
    ) -> list[list[int]]:
        encs = self.raw.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [list(e.ids) for e in encs]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.raw.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        idx = self.raw.token_to_id(token)
        return None if idx is None else int(idx)

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can produce (added tokens included)."""
        return int(self.raw.get_vocab_size(with_added_tokens=True))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a ``tokenizer.json`` file or of a directory holding one, with the
    special ids of that directory's files (see the module docstring)."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no tokenizer.json (pass the model's tokenizer)")
    from tokenizers import Tokenizer as RawTokenizer

    try:
        raw = RawTokenizer.from_file(str(file))
    except Exception as e:  # the tokenizers library raises a bare Exception
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read {file}: {detail}") from e
    return Tokenizer(raw, **special_ids(raw, file.parent))


def model_tokenizer(model_dir: str | Path) -> Tokenizer | None:
    """The tokenizer that travels with a model directory, or None when it has none."""
    file = Path(model_dir) / "tokenizer.json"
    return load_tokenizer(file) if file.is_file() else None


def as_tokenizer(tokenizer: Any) -> Tokenizer | None:
    """A :class:`Tokenizer` as is; a bare ``tokenizers.Tokenizer`` (or any object with its
    ``encode`` / ``encode_batch`` / ``decode`` / ``token_to_id``) wrapped with the guessed
    EOS; None stays None."""
    if tokenizer is None or isinstance(tokenizer, Tokenizer):
        return tokenizer
    return Tokenizer(tokenizer, eos_id=guess_eos_id(tokenizer))


def eos_token_id(tokenizer: Any) -> int | None:
    """The EOS id of a :class:`Tokenizer`, or the guess for a bare tokenizer."""
    tok = as_tokenizer(tokenizer)
    return None if tok is None else tok.eos_id


def guess_eos_id(raw: Any) -> int | None:
    """The id of the first of :data:`EOS_CANDIDATES` in the vocabulary, or None."""
    for token in EOS_CANDIDATES:
        idx = raw.token_to_id(token)
        if idx is not None:
            return int(idx)
    return None


def special_ids(raw: Any, model_dir: str | Path) -> dict[str, int | None]:
    """``{"eos_id", "bos_id", "pad_id"}`` from ``model_dir``'s files (module docstring)."""
    model_dir = Path(model_dir)
    size = int(raw.get_vocab_size(with_added_tokens=True))
    gen_file = model_dir / "generation_config.json"
    tok_file = model_dir / "tokenizer_config.json"
    gen, tok_cfg = _read_json(gen_file), _read_json(tok_file)
    cfg_file, cfg = _model_config(model_dir)
    out: dict[str, int | None] = {}
    for name in SPECIALS:
        key = f"{name}_token_id"
        found = _id_value(gen.get(key), gen_file, key, size)
        if found is None:
            found = _token_value(tok_cfg.get(f"{name}_token"), raw, tok_file, name)
        if found is None:
            found = _id_value(cfg.get(key), cfg_file, key, size)
        if found is None and name == "eos":
            found = guess_eos_id(raw)
        out[f"{name}_id"] = found
    return out


def _read_json(file: Path) -> dict:
    """A JSON object file as a dict ({} when the file is absent); bare Infinity accepted."""
    if not file.is_file():
        return {}
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise UserError(f"{file}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _model_config(model_dir: Path) -> tuple[Path, dict]:
    """config.json, else the HF config a native checkpoint keeps in jaxprune.json."""
    hf = model_dir / "config.json"
    if hf.is_file():
        return hf, _read_json(hf)
    native = model_dir / "jaxprune.json"
    meta = _read_json(native)
    kept = meta.get("hf_config")
    return native, kept if isinstance(kept, dict) else {}


def _id_value(value: Any, file: Path, key: str, size: int) -> int | None:
    """A declared id: an int or a list of ints (the first); negative or null: None."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{file}: {key} must be an integer or a list of integers, got {value!r}")
    if value < 0:
        return None
    if value >= size:
        raise UserError(f"{file}: {key} {value} is outside the tokenizer's vocabulary [0, {size})")
    return value


def _token_value(value: Any, raw: Any, file: Path, name: str) -> int | None:
    """A declared special token string (or ``{"content": ...}``) as its vocabulary id."""
    if isinstance(value, dict):
        value = value.get("content")
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{file}: {name}_token must be a string, got {value!r}")
    idx = raw.token_to_id(value)
    return None if idx is None else int(idx)


__all__ = [
    "EOS_CANDIDATES",
    "Tokenizer",
    "as_tokenizer",
    "eos_token_id",
    "guess_eos_id",
    "load_tokenizer",
    "model_tokenizer",
    "special_ids",
]
