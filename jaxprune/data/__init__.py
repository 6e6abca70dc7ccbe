"""Data: documents from files (one rule, :mod:`jaxprune.data.sources`), token rows for
evaluation and calibration, packing into training rows, resumable grain iterators."""

from jaxprune.data.packing import ROW_KEYS, PackedRows, pack_window
from jaxprune.data.pipeline import make_eval_batches, make_train_iterator
from jaxprune.data.rows import check_rows, corpus_rows, load_rows
from jaxprune.data.sources import BIN_DTYPES, Corpus, iter_stream, load_corpus, resolve_files

__all__ = [
    "BIN_DTYPES",
    "ROW_KEYS",
    "Corpus",
    "PackedRows",
    "check_rows",
    "corpus_rows",
    "iter_stream",
    "load_corpus",
    "load_rows",
    "make_eval_batches",
    "make_train_iterator",
    "pack_window",
    "resolve_files",
]
