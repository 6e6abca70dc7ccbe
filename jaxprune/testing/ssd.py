"""Packed-sequence fixtures for the SSD kernel tests."""

from __future__ import annotations

import numpy as np


def segments_to_ids(lengths: list[int], first_id: int = 0) -> list[int]:
    """Segment lengths -> one id per position, counting up from ``first_id``."""
    return [first_id + i for i, n in enumerate(lengths) for _ in range(n)]


# T=37 (chunk 8: edges at 8, 16, 24, 32). Row 0: boundaries at 3, 5 (inside chunk 0), 8, 16
# (chunk edges), 21, 22 (a length-1 segment) and 31. Row 1 starts with id 2, so the initial
# state is dropped. Row 2 reuses ids (0, 1, 0, 1): chunks 0 and 1 both end in id 0 but must not
# pass state. Row 3 is constant 0 (no reset).
SEQ_IDX_37 = np.array(
    [
        segments_to_ids([3, 2, 3, 8, 5, 1, 9, 6]),
        segments_to_ids([8, 11, 1, 17], first_id=2),
        [0] * 6 + [1] * 6 + [0] * 12 + [1] * 13,
        [0] * 37,
    ],
    dtype=np.int32,
)
