"""Training data: documents from files, packing into rows, resumable grain iterators."""

from jaxprune.data.packing import ROW_KEYS, PackedRows, pack_window
from jaxprune.data.pipeline import make_eval_batches, make_train_iterator
from jaxprune.data.sources import BIN_DTYPES, Corpus, load_corpus, resolve_files

__all__ = [
    "BIN_DTYPES",
    "ROW_KEYS",
    "Corpus",
    "PackedRows",
    "load_corpus",
    "make_eval_batches",
    "make_train_iterator",
    "pack_window",
    "resolve_files",
]
