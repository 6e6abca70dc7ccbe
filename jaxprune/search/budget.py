"""The parameter budget of a search, written one unambiguous way: ``0 < x <= 1`` is a
fraction of the source's parameters (``0.6``), anything else a count of at least 1000,
written plainly or with a suffix (``4e9``, ``4B``, ``350M``, ``1.2e9``, ``800K``). A value
between 1 and 1000 (``1.5``) is neither and is refused."""

from __future__ import annotations

import math
import re

from jaxprune.errors import UserError

#: Count suffixes (case-insensitive): thousand, million, billion (B or G), trillion.
SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
MIN_COUNT = 1000
HOW = (
    "write a fraction of the source as 0 < x <= 1 (e.g. 0.6) or a count of at least "
    f"{MIN_COUNT} (e.g. 4e9, 4B, 350M, 1.2e9)"
)
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_params(value: str | float | int) -> float:
    """The budget as a float: a fraction (<= 1) or a parameter count (>= 1000)."""
    if isinstance(value, bool):
        raise UserError(f"parameter budget {value!r}: {HOW}")
    if isinstance(value, (int, float)):
        number, text = float(value), repr(value)
    else:
        m = _NUMBER.match(str(value))
        if not m:
            raise UserError(f"parameter budget {value!r} is not a number; {HOW}")
        number, text = float(m[1]) * SUFFIXES.get(m[2].lower(), 1.0), str(value).strip()
    if not math.isfinite(number) or number <= 0:
        raise UserError(f"search: the parameter budget must be > 0, got {text}")
    if 1 < number < MIN_COUNT:
        raise UserError(f"parameter budget {text} is neither a fraction nor a count; {HOW}")
    return number


def describe(value: float) -> str:
    """``0.6`` -> ``60% of the source``; ``4e9`` -> ``4,000,000,000 parameters``."""
    return f"{value:.0%} of the source" if value <= 1 else f"{value:,.0f} parameters"
