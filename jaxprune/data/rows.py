"""Token rows (rows, T) for evaluation and calibration, from the training stream.

Rows are the corpus's token stream (documents with their EOS, read by the rule of
:mod:`jaxprune.data.sources`, exactly as training reads them) cut into consecutive windows
of ``seq_len`` tokens, the incomplete tail dropped. Row i is stream ``[i*T, (i+1)*T)``,
which is also the ``tokens`` of training / eval row i (:class:`jaxprune.data.PackedRows`).
One exception: a path that is a single 2-D ``.npy`` (rows, T) is used as given
(``seq_len`` ignored). A row of T tokens gives T - 1 next-token predictions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxprune.data.sources import Corpus, iter_stream
from jaxprune.errors import UserError
from jaxprune.tokenizer import Tokenizer

PathLike = str | os.PathLike


def load_rows(
    path: PathLike | Sequence[PathLike],
    *,
    seq_len: int,
    tokenizer: Tokenizer | Any = None,
    max_rows: int | None = None,
    vocab_size: int | None = None,
    eos_id: int | None = None,
    text_suffixes: Sequence[str] = (".txt",),
    bin_dtype: str = "uint16",
) -> np.ndarray:
    """Token rows int32 (rows, seq_len) of ``path`` (see the module docstring).

    ``path`` and the keywords after ``vocab_size`` are those of
    :func:`jaxprune.data.load_corpus`. ``max_rows`` keeps the first rows, and no more of
    the files is read or tokenized than they need. ``vocab_size``: every id must be below
    it (:func:`check_rows`).
    """
    if max_rows is not None and (int(max_rows) != max_rows or max_rows < 1):
        raise UserError(f"data: max_rows must be an integer >= 1, got {max_rows!r}")
    rows = _single_matrix(path, max_rows)
    if rows is None:
        _check_seq_len(seq_len)
        need = None if max_rows is None else max_rows * seq_len
        stream = _collect(
            iter_stream(
                path,
                tokenizer=tokenizer,
                eos_id=eos_id,
                vocab_size=None,
                bin_dtype=bin_dtype,
                text_suffixes=text_suffixes,
            ),
            need,
        )
        rows = _windows(stream, seq_len, max_rows, _describe(path))
    if vocab_size is not None:
        return check_rows(rows, vocab_size)
    return np.ascontiguousarray(rows, dtype=np.int32)


def corpus_rows(corpus: Corpus, *, seq_len: int, max_rows: int | None = None) -> np.ndarray:
    """The rows of an already loaded :class:`Corpus`: int32 (rows, seq_len), same rule."""
    _check_seq_len(seq_len)
    n = corpus.num_tokens if max_rows is None else min(corpus.num_tokens, max_rows * seq_len)
    return _windows(corpus.tokens(0, n), seq_len, max_rows, "the corpus")


def check_rows(rows: np.ndarray, vocab_size: int) -> np.ndarray:
    """Validate token rows (rows, T) against the model vocabulary; return them as int32."""
    rows = np.asarray(rows)
    if rows.dtype.kind not in "iu":
        raise UserError(f"data: token rows must be integers, got {rows.dtype}")
    if rows.ndim != 2:
        raise UserError(f"data: token rows must be 2-D (rows, T), got shape {rows.shape}")
    if rows.shape[0] == 0:
        raise UserError("data: no token rows")
    if rows.shape[1] < 2:
        raise UserError(
            f"data: rows have {rows.shape[1]} tokens; need T >= 2 "
            "(a row of T tokens gives T - 1 predictions)"
        )
    bad = (rows < 0) | (rows >= vocab_size)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise UserError(
            f"data: token id {int(rows[r, c])} at row {r}, position {c} is outside the "
            f"model's vocabulary [0, {vocab_size}) ({int(bad.sum())} such ids in all); "
            "was the data tokenized with this model's tokenizer?"
        )
    return np.ascontiguousarray(rows, dtype=np.int32)


@contextlib.contextmanager
def labelled(label: str) -> Iterator[None]:
    """Re-raise the ``data: ...`` UserErrors of the block as ``<label>: ...`` (e.g.
    ``calibration data``), so the message says which data of the command is wrong."""
    try:
        yield
    except UserError as e:
        msg = str(e)
        if not msg.startswith("data: "):
            raise
        raise UserError(f"{label}: {msg[len('data: ') :]}") from e


def _single_matrix(path, max_rows: int | None) -> np.ndarray | None:
    """The rows of ``path`` when it is one 2-D ``.npy`` file, else None."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    if p.suffix.lower() != ".npy" or not p.is_file():
        return None
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError:
        return None  # iter_stream reports it
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind not in "iu":
        return None
    if arr.shape[0] == 0:
        raise UserError(f"data: {str(p)!r} has no rows")
    if arr.shape[1] < 2:
        raise UserError(
            f"data: {str(p)!r} has rows of {arr.shape[1]} tokens; need T >= 2 "
            "(a row of T tokens gives T - 1 predictions)"
        )
    return _as_ids(np.asarray(arr[:max_rows]), repr(str(p)))


def _check_seq_len(seq_len: int) -> None:
    if int(seq_len) != seq_len or seq_len < 2:
        raise UserError(f"data: seq_len must be an integer >= 2, got {seq_len!r}")


def _collect(pieces, limit: int | None) -> np.ndarray:
    """Concatenate 1-D pieces into one int64 stream, stopping once ``limit`` ids are in."""
    parts, total = [], 0
    for ids in pieces:
        take = ids if limit is None else ids[: limit - total]
        parts.append(np.asarray(take, dtype=np.int64))
        total += len(take)
        if limit is not None and total >= limit:
            break
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _windows(stream: np.ndarray, seq_len: int, max_rows: int | None, what: str) -> np.ndarray:
    """1-D stream -> (rows, seq_len): consecutive non-overlapping windows, tail dropped."""
    if len(stream) == 0:
        raise UserError(f"data: {what} gives no tokens")
    rows = len(stream) // seq_len
    if rows == 0:
        raise UserError(
            f"data: the token stream of {what} ({len(stream)} tokens) is shorter "
            f"than seq_len={seq_len}"
        )
    if max_rows is not None:
        rows = min(rows, max_rows)
    return _as_ids(stream[: rows * seq_len].reshape(rows, seq_len), what)


def _as_ids(arr: np.ndarray, what: str) -> np.ndarray:
    """Checked int32 copy of integer token ids."""
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise UserError(f"data: {what} has a negative token id ({lo})")
        if hi > np.iinfo(np.int32).max:
            raise UserError(f"data: {what} has a token id too large for int32 ({hi})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _describe(path) -> str:
    if isinstance(path, (str, os.PathLike)):
        return repr(str(path))
    return f"{len(path)} paths"


__all__ = ["check_rows", "corpus_rows", "labelled", "load_rows"]
