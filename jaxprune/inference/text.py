"""Host-side helpers for text generation: left padding and shape buckets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` >= ``n`` (>= ``multiple``): a shape bucket, so
    that prompts of nearby lengths share one compilation."""
    return max(multiple, -(-n // multiple) * multiple)


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int = 0, *, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (tokens (b, T) int32, offset (b,) int32), right-aligned.

    T is the longest length rounded up to ``multiple``; ``offset[i] = T - len(seqs[i])``
    is the number of ``pad_id`` tokens in front of row i (what ``init_cache(offset=...)``
    and ``make_generate``'s ``offset`` expect). Every sequence must be non-empty.
    """
    if not seqs:
        raise ValueError("left_pad: no sequences")
    lengths = [len(s) for s in seqs]
    if min(lengths) < 1:
        raise ValueError("left_pad: every prompt needs at least one token")
    t = round_up(max(lengths), multiple)
    tokens = np.full((len(seqs), t), pad_id, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, t - len(s) :] = np.asarray(s, np.int32)
    return tokens, np.asarray([t - n for n in lengths], np.int32)
