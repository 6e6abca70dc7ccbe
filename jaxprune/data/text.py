"""Reading text files into token documents (the text half of :mod:`jaxprune.data.sources`,
whose docstring states the one rule for every file type).

Documents are yielded as pieces ``(ids int64 (n,), starts_document)``, so that a reader that
needs only the first tokens (:func:`jaxprune.data.rows.load_rows` with ``max_rows``) stops
tokenizing early: a text file is tokenized in chunks of about ``_TEXT_CHUNK_CHARS``
characters, cut on line boundaries; ``.jsonl`` / ``.parquet`` documents in batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxprune.errors import UserError
from jaxprune.tokenizer import Tokenizer

# Text is tokenized in pieces of about this many characters (text files: cut on line
# boundaries; .jsonl / .parquet: batches of whole documents, at most _BATCH_DOCS of them).
_TEXT_CHUNK_CHARS = 1 << 20
_BATCH_DOCS = 1024

Piece = tuple[np.ndarray, bool]


def text_pieces(
    path: Path, text_suffixes: Sequence[str], tokenizer: Tokenizer, eos: int | None
) -> Iterator[Piece]:
    """The documents of one text file as pieces ``(ids, starts_document)``; each non-empty
    document ends with ``eos`` (when not None). A text-suffix file is one document; a
    ``.jsonl`` / ``.parquet`` file one document per line / row."""
    tail = np.array([] if eos is None else [eos], dtype=np.int64)
    if path.suffix.lower() in text_suffixes:
        first = True
        for chunk in text_chunks(path):
            ids = np.asarray(tokenizer.encode(chunk), np.int64)
            if len(ids):
                yield ids, first
                first = False
        if not first and len(tail):
            yield tail, False
        return
    texts = jsonl_texts(path) if path.suffix.lower() == ".jsonl" else parquet_texts(path)
    for batch in _batches(texts):
        for ids in tokenizer.encode_batch(batch):
            if ids:
                yield np.concatenate([np.asarray(ids, np.int64), tail]), True


def _batches(texts: Iterator[str]) -> Iterator[list[str]]:
    """Documents in batches of about ``_TEXT_CHUNK_CHARS`` characters."""
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= _TEXT_CHUNK_CHARS or len(batch) >= _BATCH_DOCS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def open_text(path: Path):
    # newline="" keeps the file's line endings, so the tokenizer sees the exact text.
    return open(path, encoding="utf-8", newline="")


def text_chunks(path: Path) -> Iterator[str]:
    """The file's text in pieces of about ``_TEXT_CHUNK_CHARS`` characters.

    Pieces end on a line boundary followed by a non-whitespace character, so no run of
    whitespace (which tokenizers may merge) is cut in two.
    """
    buf: list[str] = []
    size = 0
    with open_text(path) as f:
        try:
            for line in f:
                if size >= _TEXT_CHUNK_CHARS and line[:1].strip():
                    yield "".join(buf)
                    buf, size = [], 0
                buf.append(line)
                size += len(line)
        except UnicodeDecodeError as e:
            raise UserError(f"data: {str(path)!r} is not valid UTF-8 ({e.reason})") from e
    if buf:
        yield "".join(buf)


def jsonl_texts(path: Path) -> Iterator[str]:
    """The ``"text"`` of every non-blank line of a ``.jsonl`` file."""
    with open_text(path) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield jsonl_text(line, path, lineno)
        except UnicodeDecodeError as e:
            raise UserError(
                f"data: {str(path)!r} is not valid UTF-8 after line {lineno} ({e.reason})"
            ) from e


def jsonl_text(line: str, path: Path, lineno: int) -> str:
    where = f"data: {str(path)}, line {lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: invalid JSON ({e.msg})") from e
    if not isinstance(obj, dict) or "text" not in obj:
        raise UserError(f'{where}: expected a JSON object with a "text" field')
    if not isinstance(obj["text"], str):
        raise UserError(f'{where}: "text" must be a string, got {type(obj["text"]).__name__}')
    return obj["text"]


def parquet_texts(path: Path) -> Iterator[str]:
    """The non-null values of a parquet file's ``text`` column (needs ``pyarrow``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise UserError(f"data: reading {str(path)!r} needs pyarrow (pip install pyarrow)") from e
    try:
        table = pq.ParquetFile(path)
        if "text" not in table.schema_arrow.names:
            raise UserError(f'data: {str(path)!r} has no "text" column')
        for batch in table.iter_batches(columns=["text"]):
            yield from (t for t in batch.column(0).to_pylist() if t is not None)
    except OSError as e:
        raise UserError(f"data: cannot read {str(path)!r} as parquet ({e})") from e
