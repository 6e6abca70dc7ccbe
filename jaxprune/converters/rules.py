"""The declarative mapping engine: HF tensors <-> native parameters, one rule per HF tensor.

A :class:`Rule` names one HF tensor and the native parameter(s) it becomes. The ``layout``
says how the two relate; every transform is an exact reshape / transpose / split (and its
inverse on export), so HF -> native -> HF is bit-exact:

``plain``   same element order: reshape, split along axis 0 into the parts
``linear``  an ``nn.Linear`` weight (out, in): transpose to (in, out), split the out axis
``conv``    a depthwise conv weight (C, 1, K): to (K, C), split the channel axis

``expert=j`` writes into (or reads from) slice ``j`` of stacked (E, ...) native params.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

Layout = Literal["plain", "linear", "conv"]


@dataclass(frozen=True)
class Part:
    """One native parameter (dotted path from the model root) and its shape (per expert)."""

    path: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Rule:
    hf: str
    hf_shape: tuple[int, ...]
    parts: tuple[Part, ...]
    layout: Layout = "plain"
    expert: int | None = None

    def __post_init__(self):
        if sum(p.size for p in self.parts) != math.prod(self.hf_shape):
            raise ValueError(f"rule {self.hf}: parts {self.parts} do not fill {self.hf_shape}")


def linear(hf: str, in_dim: int, *parts: tuple[str, tuple[int, ...]], expert=None) -> Rule:
    """An ``nn.Linear`` weight of shape (sum of part widths, in_dim)."""
    ps = tuple(Part(p, s) for p, s in parts)
    out = sum(p.size for p in ps) // in_dim
    return Rule(hf, (out, in_dim), ps, "linear", expert)


def plain(
    hf: str, hf_shape: tuple[int, ...], *parts: tuple[str, tuple[int, ...]], expert=None
) -> Rule:
    return Rule(hf, tuple(hf_shape), tuple(Part(p, s) for p, s in parts), "plain", expert)


def conv(hf: str, kernel: int, *parts: tuple[str, tuple[int, ...]]) -> Rule:
    ps = tuple(Part(p, s) for p, s in parts)
    return Rule(hf, (sum(p.size for p in ps) // kernel, 1, kernel), ps, "conv")


def to_native(rule: Rule, w: np.ndarray) -> list[np.ndarray]:
    """HF tensor -> native arrays, one per part (copies; the input is never modified)."""
    w = np.asarray(w)
    if rule.layout == "linear":
        canon = w.T  # (in, out)
    elif rule.layout == "conv":
        canon = w[:, 0, :].T  # (K, C)
    else:
        canon = w.reshape(-1)
    lead = 1 if rule.layout == "plain" else canon.shape[0]
    if rule.layout == "plain":
        canon = canon.reshape(1, -1)
    sizes = [p.size // lead for p in rule.parts]
    pieces = np.split(canon, np.cumsum(sizes)[:-1], axis=1)
    return [np.ascontiguousarray(x).reshape(p.shape) for x, p in zip(pieces, rule.parts)]


def to_hf(rule: Rule, arrays: list[np.ndarray]) -> np.ndarray:
    """Native arrays (one per part) -> the HF tensor; the exact inverse of :func:`to_native`."""
    if rule.layout == "plain":
        flat = [a.reshape(-1) for a in arrays]
        return (flat[0] if len(flat) == 1 else np.concatenate(flat)).reshape(rule.hf_shape)
    lead = rule.hf_shape[1] if rule.layout == "linear" else rule.hf_shape[2]
    parts = [a.reshape(lead, -1) for a in arrays]
    canon = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)  # no copy for one
    if rule.layout == "linear":
        return np.ascontiguousarray(canon.T)
    return np.ascontiguousarray(canon.T[:, None, :])


def group_of(path: str) -> str:
    """Native checkpoint group of a parameter path: ``blocks.<i>`` or its first component."""
    head, _, rest = path.partition(".")
    if head == "blocks":
        return f"blocks.{rest.split('.', 1)[0]}"
    return head


def iter_groups(rules: list[Rule]) -> Iterator[tuple[str, list[Rule]]]:
    """Rules grouped by the native group of their parts, in first-seen order."""
    groups: dict[str, list[Rule]] = {}
    for r in rules:
        g = group_of(r.parts[0].path)
        if any(group_of(p.path) != g for p in r.parts):
            raise ValueError(f"rule {r.hf} spans several native groups")
        groups.setdefault(g, []).append(r)
    yield from groups.items()
