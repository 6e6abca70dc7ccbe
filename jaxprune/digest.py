"""Digests for caches keyed by what they depend on: of JSON-able values (dataclasses and
paths included) and of arrays (weights, token ids)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np


def array_digest(arrays) -> str:
    """A 16-hex digest of the bytes of a sequence of arrays (weights, token ids)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value (dataclasses and paths included)."""
    text = json.dumps(_plain(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
