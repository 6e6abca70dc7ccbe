"""Token data from files: the one rule by which every command reads them.

Training (:func:`load_corpus` -> a :class:`Corpus`, one token stream plus document starts),
evaluation and calibration (:func:`jaxprune.data.rows.load_rows`: the same stream cut into
rows) read a path, a directory (recursively, hidden entries skipped), a glob, or a list of
these; files are read in sorted order, each file's documents after the previous file's:

* text (suffix in ``text_suffixes``, default ``.txt``): **one document per file**, tokenized
  with the model's tokenizer (no special tokens added) and followed by EOS. A directory or
  a glob of files (e.g. ``src/**/*.py`` with ``text_suffixes=(".py",)``) gives one
  document each.
* ``.jsonl``: one ``{"text": ...}`` document per non-blank line, tokenized, each followed by
  EOS.
* ``.parquet``: the ``text`` column, one document per row (needs ``pyarrow``).
* ``.npy``: 1-D integer token stream (taken as is, no EOS added), cut into documents after
  each ``eos_id`` (one document when there is no EOS id); or 2-D (docs, T): each row is one
  document. (``load_rows`` uses a lone 2-D ``.npy`` as its rows, as given.)
* ``.bin``: a raw token stream of ``bin_dtype`` (nanoGPT / Megatron-style), split like a
  1-D ``.npy``.

Empty documents are skipped (no lone EOS). EOS is ``eos_id`` when given, else the
tokenizer's (:attr:`jaxprune.tokenizer.Tokenizer.eos_id`: from the model's own files, see
:mod:`jaxprune.tokenizer`), else none. Bad input raises a one-line ``UserError``.

Memory: tokenized text lives in RAM as int32 (4 bytes a token). ``.npy`` / ``.bin`` files are
memory-mapped and only their document starts (8 bytes a document) are held; finding them
(and checking ids against ``vocab_size``) is one chunked pass over the file.
:func:`iter_stream` yields the same stream lazily, for readers that need only its start.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxprune.data.text import Piece, text_pieces
from jaxprune.errors import UserError
from jaxprune.tokenizer import Tokenizer, as_tokenizer

BIN_DTYPES = ("uint16", "uint32")
TOKEN_SUFFIXES = (".npy", ".bin")
DOC_SUFFIXES = (".jsonl", ".parquet")
_SCAN_CHUNK = 1 << 24  # tokens per step of the EOS / range scan over memory-mapped files

PathLike = str | os.PathLike


class Corpus:
    """Documents as one token stream, stored in parts (one per file).

    parts: 1-D integer arrays (in memory or memory-mapped), concatenated in order.
    doc_starts: (D,) int64 sorted offsets in the stream where documents start; ``[0] == 0``.
    """

    def __init__(self, parts: Sequence[np.ndarray], doc_starts: np.ndarray):
        self.parts = tuple(parts)
        self.doc_starts = np.asarray(doc_starts, dtype=np.int64)
        self._offsets = np.cumsum([0] + [len(p) for p in self.parts], dtype=np.int64)
        if not self.parts or self.num_tokens == 0:
            raise ValueError("data: the corpus holds no tokens")
        ok = self.doc_starts.ndim == 1 and len(self.doc_starts) and self.doc_starts[0] == 0
        if (
            not ok
            or np.any(np.diff(self.doc_starts) <= 0)
            or self.doc_starts[-1] >= self.num_tokens
        ):
            raise ValueError("data: doc_starts must rise strictly from 0 within the stream")

    @property
    def num_tokens(self) -> int:
        return int(self._offsets[-1])

    @property
    def num_docs(self) -> int:
        return len(self.doc_starts)

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Stream tokens [start, stop) as int32 (stop is clipped to the stream's end)."""
        stop = min(stop, self.num_tokens)
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        out, pos = [], start
        for k in range(first, len(self.parts)):
            if pos >= stop:
                break
            base = int(self._offsets[k])
            piece = self.parts[k][pos - base : stop - base]
            out.append(piece)
            pos += len(piece)
        return np.concatenate(out).astype(np.int32) if out else np.zeros(0, np.int32)


def load_corpus(
    paths: PathLike | Sequence[PathLike],
    *,
    tokenizer: Tokenizer | Any = None,
    eos_id: int | None = None,
    vocab_size: int | None = None,
    bin_dtype: str = "uint16",
    text_suffixes: Sequence[str] = (".txt",),
) -> Corpus:
    """Read every file of ``paths`` (see the module docstring) into one :class:`Corpus`."""
    tok, eos_id, text_suffixes = _setup(tokenizer, eos_id, vocab_size, bin_dtype, text_suffixes)
    parts: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    offset = 0
    for path in resolve_files(paths, text_suffixes):
        suffix = path.suffix.lower()
        if suffix in TOKEN_SUFFIXES:
            arr, doc_starts = _read_tokens(path, suffix, bin_dtype, eos_id, vocab_size)
        else:
            pieces = text_pieces(path, text_suffixes, _need(tok, path), eos_id)
            arr, doc_starts = _join_pieces(pieces, path, vocab_size)
        if len(arr) == 0:
            continue
        parts.append(arr)
        starts.append(doc_starts + offset)
        offset += len(arr)
    if not parts:
        raise UserError(f"data: {_describe(paths)} holds no tokens")
    return Corpus(tuple(parts), np.concatenate(starts))


def iter_stream(
    paths: PathLike | Sequence[PathLike],
    *,
    tokenizer: Tokenizer | Any = None,
    eos_id: int | None = None,
    vocab_size: int | None = None,
    bin_dtype: str = "uint16",
    text_suffixes: Sequence[str] = (".txt",),
) -> Iterator[np.ndarray]:
    """The token stream of :func:`load_corpus` (the same tokens, in order) as 1-D integer
    pieces, read lazily: stop iterating and no more of the files is read or tokenized."""
    tok, eos_id, text_suffixes = _setup(tokenizer, eos_id, vocab_size, bin_dtype, text_suffixes)
    for path in resolve_files(paths, text_suffixes):
        suffix = path.suffix.lower()
        if suffix in TOKEN_SUFFIXES:
            arr = _open_tokens(path, suffix, bin_dtype).reshape(-1)
            for lo in range(0, len(arr), _SCAN_CHUNK):
                chunk = arr[lo : lo + _SCAN_CHUNK]
                _check_range(chunk, path, vocab_size)
                yield chunk
        else:
            for ids, _ in text_pieces(path, text_suffixes, _need(tok, path), eos_id):
                _check_range(ids, path, vocab_size)
                yield ids


def _setup(tokenizer, eos_id, vocab_size, bin_dtype, text_suffixes):
    """(wrapped tokenizer, EOS id, lower-case text suffixes), checked."""
    if bin_dtype not in BIN_DTYPES:
        raise UserError(f"data: bin_dtype must be one of {BIN_DTYPES}, got {bin_dtype!r}")
    tok = as_tokenizer(tokenizer)
    if eos_id is None and tok is not None:
        eos_id = tok.eos_id
    if eos_id is not None and vocab_size is not None and not 0 <= eos_id < vocab_size:
        raise UserError(f"data: eos_id {eos_id} is outside the vocabulary [0, {vocab_size})")
    return tok, eos_id, tuple(s.lower() for s in text_suffixes)


def _need(tok: Tokenizer | None, path: Path) -> Tokenizer:
    if tok is None:
        raise UserError(
            f"data: {path.suffix.lower()} file {str(path)!r} needs the model's tokenizer "
            "(tokenizer.json)"
        )
    return tok


def resolve_files(paths: PathLike | Sequence[PathLike], text_suffixes: Sequence[str]) -> list[Path]:
    """Expand paths, directories (recursively, hidden entries skipped) and globs to files."""
    known = tuple(text_suffixes) + TOKEN_SUFFIXES + DOC_SUFFIXES
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise UserError("data: no input paths given")
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in known
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserError(f"data: directory {str(path)!r} holds no {'/'.join(known)} files")
        elif glob.has_magic(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            found = [p for p in found if p.is_file()]
            if not found:
                raise UserError(f"data: no file matches {str(item)!r}")
        elif path.is_file():
            found = [path]
        else:
            raise UserError(f"data: no such file or directory {str(path)!r}")
        for p in found:
            if p.suffix.lower() not in known:
                raise UserError(
                    f"data: unsupported file type {p.suffix or '(none)'!r} for {str(p)!r} "
                    f"(use {', '.join(known)}; text_suffixes adds text types)"
                )
        files.extend(found)
    return files


def _join_pieces(pieces: Iterator[Piece], path: Path, vocab_size: int | None):
    """Document pieces -> (stream int32, doc_starts int64)."""
    arrays, starts, offset = [], [], 0
    for ids, new_doc in pieces:
        if new_doc:
            starts.append(offset)
        arrays.append(ids.astype(np.int32))
        offset += len(ids)
    stream = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    _check_range(stream, path, vocab_size)
    return stream, np.asarray(starts, dtype=np.int64)


def _open_tokens(path: Path, suffix: str, bin_dtype: str) -> np.ndarray:
    """A ``.npy`` / ``.bin`` token file, memory-mapped: 1-D or 2-D integers."""
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            arr = np.memmap(path, dtype=bin_dtype, mode="r")
    except ValueError as e:  # object arrays, corrupt headers, empty or ragged .bin files
        raise UserError(f"data: cannot read {str(path)!r} as token ids ({e})") from e
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu":
        raise UserError(f"data: {str(path)!r} does not hold integer token ids")
    if arr.ndim not in (1, 2):
        raise UserError(f"data: {str(path)!r} has shape {arr.shape}; expected 1-D or 2-D")
    return arr


def _read_tokens(path: Path, suffix: str, bin_dtype: str, eos, vocab_size):
    """A memory-mapped ``.npy`` / ``.bin`` token file -> (1-D stream, doc_starts int64)."""
    arr = _open_tokens(path, suffix, bin_dtype)
    if arr.ndim == 2:
        docs, t = arr.shape
        _check_range(arr, path, vocab_size)
        return arr.reshape(-1), np.arange(docs, dtype=np.int64) * t
    ends = []
    for lo in range(0, len(arr), _SCAN_CHUNK):
        chunk = arr[lo : lo + _SCAN_CHUNK]
        _check_range(chunk, path, vocab_size)
        if eos is not None:
            ends.append(np.flatnonzero(chunk == eos) + lo + 1)
    ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    starts = np.concatenate([[0], ends[ends < len(arr)]]).astype(np.int64)
    return arr, starts


def _check_range(ids: np.ndarray, path: Path, vocab_size: int | None) -> None:
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0:
        raise UserError(f"data: {str(path)!r} has a negative token id ({lo})")
    limit = np.iinfo(np.int32).max + 1 if vocab_size is None else vocab_size
    if hi >= limit:
        raise UserError(f"data: {str(path)!r} has token id {hi} >= vocab size {limit}")


def _describe(paths) -> str:
    if isinstance(paths, (str, os.PathLike)):
        return repr(str(paths))
    return f"{len(paths)} paths"
