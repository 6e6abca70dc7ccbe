"""grain pipelines over packed rows: a resumable training iterator and fixed eval batches.

Training: ``MapDataset.source(PackedRows) -> shuffle(seed) -> repeat(num_epochs) ->
[process_index::process_count] -> batch -> to_iter_dataset``. The shuffle is a global
permutation, the same on every process and different each epoch; each process then takes
every ``process_count``-th row of the shuffled stream, so within an epoch the processes see
disjoint rows whose union is every row. The iterator's whole state is the index of its next
batch: ``it.get_state()`` is a small JSON-able dict, and ``grain.checkpoint.CheckpointSave(it)``
/ ``CheckpointRestore(it)`` store it in an orbax ``CheckpointManager``.
"""

from __future__ import annotations

import grain
import numpy as np

from jaxprune.data.packing import ROW_KEYS, PackedRows
from jaxprune.data.sources import Corpus
from jaxprune.errors import UserError

Batch = dict[str, np.ndarray]


def make_train_iterator(
    source: Corpus | PackedRows,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    drop_remainder: bool = True,
    num_threads: int = 4,
    prefetch: int = 8,
) -> grain.DatasetIterator:
    """An iterator of this process's batches: dicts of (batch_size, seq_len) numpy arrays.

    Keys: ``tokens``, ``targets``, ``seq_idx``, ``positions`` int32 and ``loss_mask``
    float32 (see :mod:`jaxprune.data.packing`). ``num_epochs=None`` repeats forever. With a
    finite ``num_epochs`` every process gets the same number of rows (the last
    ``total % process_count`` rows are dropped) so that no process runs out first.
    ``num_threads`` / ``prefetch`` (batches) configure grain's background reading.
    """
    rows = _rows(source, seq_len)
    if int(batch_size) != batch_size or batch_size < 1:
        raise UserError(f"data: batch_size must be an integer >= 1, got {batch_size!r}")
    if not 0 <= seed < 2**32:
        raise UserError(f"data: seed must be in [0, 2**32), got {seed}")
    if num_epochs is not None and num_epochs < 1:
        raise UserError(f"data: num_epochs must be >= 1 or None, got {num_epochs}")
    if not 0 <= process_index < process_count:
        raise UserError(
            f"data: process_index {process_index} is not in [0, process_count={process_count})"
        )
    ds = grain.MapDataset.source(rows)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if num_epochs is not None:
        ds = ds[: len(ds) - len(ds) % process_count]
    ds = ds[process_index::process_count]
    if len(ds) < batch_size and drop_remainder:
        raise UserError(
            f"data: {len(ds)} rows per process make no full batch of {batch_size} "
            f"({len(rows)} rows of {rows.seq_len} tokens, {num_epochs} epoch(s))"
        )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


def check_one_batch(
    source: Corpus | PackedRows, *, batch_size: int, seq_len: int, what: str = "training data"
) -> None:
    """UserError unless ``source`` fills one batch of distinct rows: ``batch_size`` rows of
    ``seq_len`` inputs, each with its next-token target, i.e. batch_size x seq_len + 1
    tokens (with less, every step would train on the same few tokens again)."""
    corpus = source.corpus if isinstance(source, PackedRows) else source
    if not isinstance(corpus, Corpus):
        return  # make_train_iterator reports the type
    need = int(batch_size) * int(seq_len) + 1
    if corpus.num_tokens < need:
        raise UserError(
            f"{what} has {corpus.num_tokens:,} tokens, too few for one batch: batch_size "
            f"{batch_size} x seq_len {seq_len} + 1 = {need:,} tokens; give more data or "
            "lower batch_size / seq_len"
        )


def make_eval_batches(
    source: Corpus | PackedRows,
    *,
    seq_len: int,
    batch_size: int,
    max_rows: int | None = None,
) -> list[Batch]:
    """The first ``max_rows`` rows (all when None), in order, as a list of batches.

    Every batch is (batch_size, seq_len) like the training batches; the last one is filled up
    with empty rows (``loss_mask`` 0), so a jitted step compiles once. Held in memory.
    """
    rows = _rows(source, seq_len)
    if int(batch_size) != batch_size or batch_size < 1:
        raise UserError(f"data: batch_size must be an integer >= 1, got {batch_size!r}")
    if max_rows is not None and max_rows < 1:
        raise UserError(f"data: max_rows must be >= 1, got {max_rows}")
    n = len(rows) if max_rows is None else min(len(rows), max_rows)
    batches = []
    for lo in range(0, n, batch_size):
        items = [rows[i] for i in range(lo, min(lo + batch_size, n))]
        items += [_empty_row(rows.seq_len)] * (batch_size - len(items))
        batches.append({k: np.stack([r[k] for r in items]) for k in ROW_KEYS})
    return batches


def _rows(source: Corpus | PackedRows, seq_len: int) -> PackedRows:
    if isinstance(source, PackedRows):
        if source.seq_len != seq_len:
            raise UserError(f"data: rows have seq_len {source.seq_len}, asked for {seq_len}")
        return source
    if not isinstance(source, Corpus):
        raise UserError(
            f"data: expected a Corpus (see load_corpus) or PackedRows, got {type(source).__name__}"
        )
    return PackedRows(source, seq_len)


def _empty_row(seq_len: int) -> dict[str, np.ndarray]:
    zeros = np.zeros(seq_len, np.int32)
    return {
        "tokens": zeros,
        "targets": zeros,
        "loss_mask": np.zeros(seq_len, np.float32),
        "seq_idx": zeros,
        "positions": np.arange(seq_len, dtype=np.int32),
    }
