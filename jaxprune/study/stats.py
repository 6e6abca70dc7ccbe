"""The numbers of the study: mean ± std, the "reproduced" rule and equal-parameter matching.

The rule: a finding is reproduced when the expected-better variant's mean loss is lower
than the other's by more than twice the larger of the two standard deviations (sample
std, ddof=1). A variant with a single value has std 0 (there is no spread to measure), so
with one seed each the rule reduces to a strict comparison of the means (a tie does not
count). No values on either side: not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jaxprune.errors import UserError


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std); std is 0.0 for one value; (nan, nan) for none."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def reproduced(better: Sequence[float], worse: Sequence[float]) -> bool:
    """True when mean(worse) - mean(better) > 2 * max(std(better), std(worse)) (module
    docstring); losses, lower is better."""
    if not better or not worse:
        return False
    (mb, sb), (mw, sw) = mean_std(better), mean_std(worse)
    return (mw - mb) > 2 * max(sb, sw)


def rel_diff(a: float, b: float) -> float:
    """|a - b| relative to b."""
    return abs(a - b) / abs(b)


def match_value(
    count: Callable[[Any], int], values: Iterable[Any], reference: int, tol: float = 0.02
) -> tuple[Any, int]:
    """The value (an integer target, or a tuple of them) among ``values`` whose
    ``count(value)`` is closest to ``reference`` (ties: the first), with its count;
    UserError when even that one is off by more than ``tol`` (relative)."""
    best = None
    for v in values:
        c = count(v)
        if best is None or abs(c - reference) < abs(best[1] - reference):
            best = (v, c)
    if best is None:
        raise UserError("equal-parameter matching: no candidate values")
    if rel_diff(best[1], reference) > tol:
        raise UserError(
            f"equal-parameter matching: closest count {best[1]:,} (value {best[0]}) is "
            f"{rel_diff(best[1], reference):.1%} from {reference:,} (tolerance {tol:.0%})"
        )
    return best
