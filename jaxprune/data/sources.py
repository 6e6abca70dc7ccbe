"""Training documents: a :class:`Corpus` (one token stream plus document starts) from files.

Supported inputs (a path, a directory, a glob, or a list of these; files are read in sorted
order, each file's documents after the previous file's):

* text (suffix in ``text_suffixes``, default ``.txt``): **one document per file**, tokenized
  with the model's ``tokenizers.Tokenizer`` and followed by EOS. A directory or a glob of
  files (e.g. ``src/**/*.py`` with ``text_suffixes=(".py",)``) gives one document each.
* ``.jsonl``: one ``{"text": ...}`` document per line, tokenized, each followed by EOS.
* ``.parquet``: the ``text`` column, one document per row (needs ``pyarrow``).
* ``.npy``: 1-D integer token stream, cut into documents after each ``eos_id``
  (one document when there is no EOS id); or 2-D (docs, T): each row is one document.
* ``.bin``: a raw token stream of ``bin_dtype`` (nanoGPT / Megatron-style), split like a
  1-D ``.npy``.

EOS is ``eos_id`` when given, else the tokenizer's EOS token (see
:func:`jaxprune.evaluation.data.eos_token_id`), else none.

Memory: tokenized text lives in RAM as int32 (4 bytes a token). ``.npy`` / ``.bin`` files are
memory-mapped and only their document starts (8 bytes a document) are held; finding them
(and checking ids against ``vocab_size``) is one chunked pass over the file.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxprune.evaluation.data import (
    _encode_text,
    _jsonl_text,
    _open_text,
    _text_chunks,
    eos_token_id,
)

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
    tokenizer=None,
    eos_id: int | None = None,
    vocab_size: int | None = None,
    bin_dtype: str = "uint16",
    text_suffixes: Sequence[str] = (".txt",),
) -> Corpus:
    """Read every file of ``paths`` (see the module docstring) into one :class:`Corpus`."""
    if bin_dtype not in BIN_DTYPES:
        raise ValueError(f"data: bin_dtype must be one of {BIN_DTYPES}, got {bin_dtype!r}")
    text_suffixes = tuple(s.lower() for s in text_suffixes)
    if eos_id is None and tokenizer is not None:
        eos_id = eos_token_id(tokenizer)
    if eos_id is not None and vocab_size is not None and not 0 <= eos_id < vocab_size:
        raise ValueError(f"data: eos_id {eos_id} is outside the vocabulary [0, {vocab_size})")
    parts: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    offset = 0
    for path in resolve_files(paths, text_suffixes):
        suffix = path.suffix.lower()
        if suffix in TOKEN_SUFFIXES:
            arr, doc_starts = _read_tokens(path, suffix, bin_dtype, eos_id, vocab_size)
        else:
            if tokenizer is None:
                raise ValueError(
                    f"data: {suffix} file {str(path)!r} needs the model's tokenizer "
                    "(tokenizer.json)"
                )
            docs = _text_docs(path, suffix, text_suffixes, tokenizer, eos_id)
            arr, doc_starts = _join_docs(docs, path, vocab_size)
        if len(arr) == 0:
            continue
        parts.append(arr)
        starts.append(doc_starts + offset)
        offset += len(arr)
    if not parts:
        raise ValueError(f"data: {_describe(paths)} holds no tokens")
    return Corpus(tuple(parts), np.concatenate(starts))


def resolve_files(paths: PathLike | Sequence[PathLike], text_suffixes: Sequence[str]) -> list[Path]:
    """Expand paths, directories (recursively, hidden entries skipped) and globs to files."""
    known = tuple(text_suffixes) + TOKEN_SUFFIXES + DOC_SUFFIXES
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("data: no input paths given")
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
                raise ValueError(f"data: directory {str(path)!r} holds no {'/'.join(known)} files")
        elif glob.has_magic(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            found = [p for p in found if p.is_file()]
            if not found:
                raise ValueError(f"data: no file matches {str(item)!r}")
        elif path.is_file():
            found = [path]
        else:
            raise ValueError(f"data: no such file or directory {str(path)!r}")
        for p in found:
            if p.suffix.lower() not in known:
                raise ValueError(
                    f"data: unsupported file type {p.suffix or '(none)'!r} for {str(p)!r} "
                    f"(use {', '.join(known)}; text_suffixes adds text types)"
                )
        files.extend(found)
    return files


@contextlib.contextmanager
def _relabel():
    """Errors raised by the shared evaluation readers name the training data instead."""
    try:
        yield
    except ValueError as e:
        raise ValueError(str(e).replace("eval data:", "data:", 1)) from e


def _text_docs(path: Path, suffix: str, text_suffixes, tokenizer, eos) -> Iterator[np.ndarray]:
    """Token ids (int64) of each non-empty document of a text file, each followed by ``eos``."""
    tail = np.array([] if eos is None else [eos], dtype=np.int64)
    if suffix in text_suffixes:
        with _relabel():
            pieces = [np.asarray(p, np.int64) for p in _encode_text(tokenizer, _text_chunks(path))]
        if sum(len(p) for p in pieces):
            yield np.concatenate([*pieces, tail])
        return
    texts = iter(_jsonl_texts(path) if suffix == ".jsonl" else _parquet_texts(path))
    while batch := list(itertools.islice(texts, 1024)):
        for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
            if enc.ids:
                yield np.concatenate([np.asarray(enc.ids, np.int64), tail])


def _jsonl_texts(path: Path) -> Iterator[str]:
    with _relabel(), _open_text(path) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield _jsonl_text(line, path, lineno)
        except UnicodeDecodeError as e:
            raise ValueError(
                f"data: {str(path)!r} is not valid UTF-8 after line {lineno} ({e.reason})"
            ) from e


def _parquet_texts(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ValueError(f"data: reading {str(path)!r} needs pyarrow (pip install pyarrow)") from e
    try:
        table = pq.ParquetFile(path)
        if "text" not in table.schema_arrow.names:
            raise ValueError(f'data: {str(path)!r} has no "text" column')
        for batch in table.iter_batches(columns=["text"]):
            yield from (t for t in batch.column(0).to_pylist() if t is not None)
    except OSError as e:
        raise ValueError(f"data: cannot read {str(path)!r} as parquet ({e})") from e


def _join_docs(docs: Iterator[np.ndarray], path: Path, vocab_size: int | None):
    """Documents -> (stream int32, doc_starts int64)."""
    arrays = [d.astype(np.int32) for d in docs]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    stream = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    _check_range(stream, path, vocab_size)
    return stream, np.cumsum(lengths) - lengths


def _read_tokens(path: Path, suffix: str, bin_dtype: str, eos, vocab_size):
    """A memory-mapped ``.npy`` / ``.bin`` token file -> (1-D stream, doc_starts int64)."""
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            arr = np.memmap(path, dtype=bin_dtype, mode="r")
    except ValueError as e:  # object arrays, corrupt headers, empty or ragged .bin files
        raise ValueError(f"data: cannot read {str(path)!r} as token ids ({e})") from e
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu":
        raise ValueError(f"data: {str(path)!r} does not hold integer token ids")
    if arr.ndim == 2:
        docs, t = arr.shape
        _check_range(arr, path, vocab_size)
        return arr.reshape(-1), np.arange(docs, dtype=np.int64) * t
    if arr.ndim != 1:
        raise ValueError(f"data: {str(path)!r} has shape {arr.shape}; expected 1-D or 2-D")
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
        raise ValueError(f"data: {str(path)!r} has a negative token id ({lo})")
    limit = np.iinfo(np.int32).max + 1 if vocab_size is None else vocab_size
    if hi >= limit:
        raise ValueError(f"data: {str(path)!r} has token id {hi} >= vocab size {limit}")


def _describe(paths) -> str:
    if isinstance(paths, (str, os.PathLike)):
        return repr(str(paths))
    return f"{len(paths)} paths"
