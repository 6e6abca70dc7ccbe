"""Packing a :class:`Corpus` into fixed-length rows that keep document boundaries.

The corpus is one token stream of N tokens. Row i holds the inputs at stream positions
``[i*T, (i+1)*T)`` and, as targets, the next token of each (row i's last target is row i+1's
first input), so every token after the first is predicted once per epoch. Documents may span
rows. There are ``ceil((N - 1) / T)`` rows; the last one is padded.

Per row (T = ``seq_len``):

* ``tokens`` (T,) int32: inputs (``pad_id`` on padding).
* ``targets`` (T,) int32: the next stream token (``pad_id`` where there is none).
* ``loss_mask`` (T,) float32: 1 where the target continues the input's document; 0 where the
  target is the first token of the next document, and on padding.
* ``seq_idx`` (T,) int32: segment ids 0, 1, 2, ... (non-decreasing) within the row: one
  segment per document piece, padding its own last segment. Pass it to
  ``HybridLM(tokens, seq_idx=..., positions=...)``: no attention, conv tap or SSM state crosses
  a change of id, which is the attention segment mask and the SSD's ``seq_idx`` at once.
* ``positions`` (T,) int32: 0, 1, 2, ... from each segment start. A document continued from
  the previous row starts a new segment at position 0, exactly as if run alone.

Row i is computed from the index alone (O(T log D) for D documents), so a grain
``MapDataset.source(PackedRows(...))`` can be shuffled, sharded and resumed for free.
"""

from __future__ import annotations

import numpy as np

from jaxprune.data.sources import Corpus
from jaxprune.errors import UserError

ROW_KEYS = ("tokens", "targets", "loss_mask", "seq_idx", "positions")


class PackedRows:
    """A grain random-access data source: ``rows[i]`` is the dict of row i (see module doc)."""

    def __init__(self, corpus: Corpus, seq_len: int, *, pad_id: int = 0):
        if int(seq_len) != seq_len or seq_len < 1:
            raise UserError(f"data: seq_len must be an integer >= 1, got {seq_len!r}")
        if corpus.num_tokens < 2:
            raise UserError(
                f"data: the corpus has {corpus.num_tokens} token(s); need >= 2 to predict any"
            )
        self.corpus = corpus
        self.seq_len = int(seq_len)
        self.pad_id = int(pad_id)

    def __len__(self) -> int:
        return -(-(self.corpus.num_tokens - 1) // self.seq_len)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        n, t = len(self), self.seq_len
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"data: row {index} out of range for {n} rows")
        start = (index % n) * t
        return pack_window(self.corpus, start, t, pad_id=self.pad_id)

    def __repr__(self) -> str:
        c = self.corpus
        return (
            f"PackedRows({len(self)} rows x {self.seq_len}, {c.num_tokens} tokens, "
            f"{c.num_docs} docs)"
        )


def pack_window(corpus: Corpus, start: int, seq_len: int, *, pad_id: int = 0) -> dict:
    """The row whose inputs are stream positions [start, start + seq_len) (see module doc)."""
    n, t = corpus.num_tokens, seq_len
    window = corpus.tokens(start, start + t + 1)  # inputs plus the last input's target
    real = min(len(window), t)  # real input tokens; the rest of the row is padding
    tokens = np.full(t, pad_id, np.int32)
    targets = np.full(t, pad_id, np.int32)
    tokens[:real] = window[:real]
    targets[: len(window) - 1] = window[1:]

    pos = start + np.arange(t, dtype=np.int64)
    starts = corpus.doc_starts
    doc = np.searchsorted(starts, pos, side="right") - 1  # document of each input
    doc_next = np.searchsorted(starts, pos + 1, side="right") - 1  # ... of each target
    loss_mask = ((pos + 1 < n) & (doc_next == doc)).astype(np.float32)

    seq_idx = (doc - doc[0]).astype(np.int32)
    seg_start = np.maximum(starts[doc], start)
    if real < t:  # padding: one more segment, positions from 0
        seq_idx[real:] = seq_idx[real - 1] + 1
        seg_start[real:] = start + real
    positions = (pos - seg_start).astype(np.int32)
    return {
        "tokens": tokens,
        "targets": targets,
        "loss_mask": loss_mask,
        "seq_idx": seq_idx,
        "positions": positions,
    }
