"""Evaluation data: token-id rows (rows, T) int32 from ``.npy``, ``.txt`` or ``.jsonl`` files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

# Text is tokenized in pieces of about this many characters, cut on line boundaries.
_TEXT_CHUNK_CHARS = 1 << 20
# Special tokens taken, in this order, as the end-of-document separator for ``.jsonl`` files.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")


def load_eval_rows(
    path: str | os.PathLike,
    *,
    seq_len: int,
    tokenizer=None,
    max_rows: int | None = None,
) -> np.ndarray:
    """Load evaluation rows: int32 (rows, T).

    * ``.npy`` 1-D: a token stream cut into consecutive windows of ``seq_len`` tokens (the
      incomplete tail is dropped); 2-D (rows, T): used as given (``seq_len`` is ignored).
    * ``.txt``: the whole file tokenized as one stream, then windowed like a 1-D ``.npy``.
    * ``.jsonl``: one ``{"text": ...}`` object per line; the documents are tokenized,
      each followed by the tokenizer's EOS token when it has one (see :func:`eos_token_id`),
      concatenated and windowed.

    A window of T tokens gives T - 1 next-token predictions. ``tokenizer`` is a
    ``tokenizers.Tokenizer`` (needed for text files). ``max_rows`` keeps the first rows.
    """
    path = Path(path)
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"eval data: max_rows must be >= 1, got {max_rows}")
    if not path.is_file():
        raise ValueError(f"eval data: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _load_npy(path, seq_len, max_rows)
    if suffix not in (".txt", ".jsonl"):
        raise ValueError(
            f"eval data: unsupported file type {suffix or '(none)'!r} for {str(path)!r} "
            "(use .npy token ids, .txt or .jsonl)"
        )
    if tokenizer is None:
        raise ValueError(
            f"eval data: {suffix} file {str(path)!r} needs the model's tokenizer (tokenizer.json)"
        )
    _check_seq_len(seq_len)
    limit = None if max_rows is None else max_rows * seq_len
    if suffix == ".txt":
        pieces = _encode_text(tokenizer, _text_chunks(path))
    else:
        pieces = _encode_jsonl(tokenizer, path, eos_token_id(tokenizer))
    stream = _collect(pieces, limit)
    return _windows(stream, seq_len, max_rows, path)


def eos_token_id(tokenizer) -> int | None:
    """The id of the first of :data:`EOS_CANDIDATES` in the tokenizer's vocabulary, or None."""
    for token in EOS_CANDIDATES:
        idx = tokenizer.token_to_id(token)
        if idx is not None:
            return int(idx)
    return None


def _check_seq_len(seq_len: int) -> None:
    if int(seq_len) != seq_len or seq_len < 2:
        raise ValueError(f"eval data: seq_len must be an integer >= 2, got {seq_len!r}")


def _load_npy(path: Path, seq_len: int, max_rows: int | None) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:  # object arrays need pickle; corrupt headers
        raise ValueError(f"eval data: cannot read {str(path)!r} as token ids ({e})") from e
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"eval data: {str(path)!r} is not a single .npy array")
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"eval data: {str(path)!r} holds {arr.dtype} values; token ids must be an integer type"
        )
    if arr.ndim == 1:
        _check_seq_len(seq_len)
        n = len(arr) if max_rows is None else min(len(arr), max_rows * seq_len)
        return _windows(arr[:n], seq_len, max_rows, path)
    if arr.ndim != 2:
        raise ValueError(
            f"eval data: {str(path)!r} has shape {arr.shape}; expected a 1-D token stream "
            "or 2-D (rows, T) token ids"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"eval data: {str(path)!r} has no rows")
    if arr.shape[1] < 2:
        raise ValueError(
            f"eval data: {str(path)!r} has rows of {arr.shape[1]} tokens; need T >= 2 "
            "(a row of T tokens gives T - 1 predictions)"
        )
    return _as_ids(arr[:max_rows], path)


def _as_ids(arr: np.ndarray, path: Path) -> np.ndarray:
    """Checked int32 copy of integer token ids."""
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise ValueError(f"eval data: {str(path)!r} has a negative token id ({lo})")
        if hi > np.iinfo(np.int32).max:
            raise ValueError(f"eval data: {str(path)!r} has a token id too large for int32 ({hi})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _windows(stream: np.ndarray, seq_len: int, max_rows: int | None, path: Path) -> np.ndarray:
    """1-D stream -> (rows, seq_len): consecutive non-overlapping windows, tail dropped."""
    if len(stream) == 0:
        raise ValueError(f"eval data: {str(path)!r} gives no tokens")
    rows = len(stream) // seq_len
    if rows == 0:
        raise ValueError(
            f"eval data: the token stream of {str(path)!r} ({len(stream)} tokens) is shorter "
            f"than seq_len={seq_len}"
        )
    if max_rows is not None:
        rows = min(rows, max_rows)
    return _as_ids(stream[: rows * seq_len].reshape(rows, seq_len), path)


def _collect(pieces: Iterable[list[int]], limit: int | None) -> np.ndarray:
    """Concatenate id lists into one int64 stream, stopping once ``limit`` ids are in."""
    parts, total = [], 0
    for ids in pieces:
        parts.append(np.asarray(ids, dtype=np.int64))
        total += len(ids)
        if limit is not None and total >= limit:
            break
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _open_text(path: Path):
    # newline="" keeps the file's line endings, so the tokenizer sees the exact text.
    return open(path, encoding="utf-8", newline="")


def _text_chunks(path: Path) -> Iterator[str]:
    """The file's text in pieces of about ``_TEXT_CHUNK_CHARS`` characters.

    Pieces end on a line boundary followed by a non-whitespace character, so no run of
    whitespace (which tokenizers may merge) is cut in two.
    """
    buf: list[str] = []
    size = 0
    with _open_text(path) as f:
        try:
            for line in f:
                if size >= _TEXT_CHUNK_CHARS and line[:1].strip():
                    yield "".join(buf)
                    buf, size = [], 0
                buf.append(line)
                size += len(line)
        except UnicodeDecodeError as e:
            raise ValueError(f"eval data: {str(path)!r} is not valid UTF-8 ({e.reason})") from e
    if buf:
        yield "".join(buf)


def _encode_text(tokenizer, chunks: Iterable[str]) -> Iterator[list[int]]:
    for text in chunks:
        yield tokenizer.encode(text, add_special_tokens=False).ids


def _encode_jsonl(tokenizer, path: Path, eos: int | None) -> Iterator[list[int]]:
    """Token ids of each batch of documents (about ``_TEXT_CHUNK_CHARS`` of text at a time)."""
    docs: list[str] = []
    size = 0

    def flush() -> list[int]:
        out: list[int] = []
        for enc in tokenizer.encode_batch(docs, add_special_tokens=False):
            out.extend(enc.ids)
            if eos is not None:
                out.append(eos)
        docs.clear()
        return out

    with _open_text(path) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                docs.append(_jsonl_text(line, path, lineno))
                size += len(docs[-1])
                if size >= _TEXT_CHUNK_CHARS:
                    yield flush()
                    size = 0
        except UnicodeDecodeError as e:
            raise ValueError(
                f"eval data: {str(path)!r} is not valid UTF-8 after line {lineno} ({e.reason})"
            ) from e
    if docs:
        yield flush()


def _jsonl_text(line: str, path: Path, lineno: int) -> str:
    where = f"eval data: {str(path)}, line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON ({e.msg})") from e
    if not isinstance(obj, dict) or "text" not in obj:
        raise ValueError(f'{where}: expected a JSON object with a "text" field')
    if not isinstance(obj["text"], str):
        raise ValueError(f'{where}: "text" must be a string, got {type(obj["text"]).__name__}')
    return obj["text"]
