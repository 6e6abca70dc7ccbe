"""Puzzle's mixed-integer program (arXiv 2411.19146, the MIP section): pick one variant per block.

A binary x_iv says block i uses variant v; each block picks exactly one (sum_v x_iv = 1),
every limited cost stays within its budget (sum c_iv x_iv <= limit), and the summed score
(lower is better) is minimised. The next best distinct choices come from no-good cuts that
forbid each solution already found. HiGHS solves it, through :func:`scipy.optimize.milp`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from jaxprune.errors import UserError


@dataclass(frozen=True)
class Solution:
    """One choice of variants: per block the variant index, its summed score and costs."""

    choice: tuple[int, ...]
    objective: float
    costs: dict[str, float]


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.6g}"


def _per_block(name: str, values: Sequence[np.ndarray], sizes: list[int], dtype) -> list:
    if len(values) != len(sizes):
        raise UserError(f"puzzle: {name} has {len(values)} blocks, the scores have {len(sizes)}")
    arrays = [np.asarray(v, dtype=dtype) for v in values]
    for i, (arr, size) in enumerate(zip(arrays, sizes, strict=True)):
        if arr.shape != (size,):
            raise UserError(f"puzzle: {name} of block {i} has shape {arr.shape}, not ({size},)")
        if dtype is float and not np.all(np.isfinite(arr)):
            raise UserError(f"puzzle: {name} of block {i} has a non-finite value")
    return arrays


def solve(
    scores: Sequence[np.ndarray],
    costs: Mapping[str, Sequence[np.ndarray]],
    limits: Mapping[str, float],
    *,
    top_k: int = 1,
    min_kept: int = 0,
    removal: Sequence[np.ndarray] | None = None,
    time_limit: float | None = None,
    gap: float = 0.0,
) -> list[Solution]:
    """The ``top_k`` best distinct choices under ``limits``, best first.

    ``min_kept``: at least this many blocks pick a variant not flagged in ``removal``.
    ``gap``: the relative optimality gap at which HiGHS stops each solve (0 proves
    optimality, which knapsack-like instances with many near-equal costs can take long to
    do). ``time_limit`` (seconds) covers all the solves together; at the limit the best
    choice found so far is returned. Fewer than ``top_k`` come back
    when fewer choices are feasible; none feasible raises :class:`UserError`.
    """
    if len(scores) == 0:
        raise UserError("puzzle: there are no blocks to choose variants for")
    sizes = [np.asarray(s).size for s in scores]
    if any(np.asarray(s).ndim != 1 for s in scores):
        raise UserError("puzzle: the scores of each block must be one-dimensional")
    if 0 in sizes:
        raise UserError(f"puzzle: block {sizes.index(0)} has no variants")
    score = _per_block("scores", scores, sizes, float)
    cost = {name: _per_block(f"cost {name!r}", v, sizes, float) for name, v in costs.items()}
    for name, limit in limits.items():
        if name not in cost:
            raise UserError(f"puzzle: limit on unknown cost {name!r} (known: {sorted(cost)})")
        if not np.isfinite(limit) or limit < 0:
            raise UserError(f"puzzle: the limit on {name} must be finite and >= 0, got {limit}")
    n = len(sizes)
    if not 0 <= gap < 1:
        raise UserError(f"puzzle: the MIP gap must be in [0, 1), got {gap}")
    if top_k < 1:
        raise UserError(f"puzzle: top_k must be >= 1, got {top_k}")
    if not 0 <= min_kept <= n:
        raise UserError(f"puzzle: min_kept must be between 0 and {n} blocks, got {min_kept}")
    if min_kept > 0 and removal is None:
        raise UserError("puzzle: min_kept needs the removal flags of each variant")

    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n_vars = int(offsets[-1])
    block_of = np.repeat(np.arange(n), sizes)
    rows = [sparse.csr_array((np.ones(n_vars), (block_of, np.arange(n_vars))), shape=(n, n_vars))]
    lower, upper = [np.ones(n)], [np.ones(n)]
    for name, limit in limits.items():
        rows.append(sparse.csr_array(np.concatenate(cost[name])[None, :]))
        lower.append([-np.inf])
        upper.append([float(limit)])
    if min_kept > 0:
        flags = np.concatenate(_per_block("removal", removal, sizes, bool))
        rows.append(sparse.csr_array((~flags).astype(float)[None, :]))
        lower.append([float(min_kept)])
        upper.append([np.inf])
    c = np.concatenate(score)
    integrality = np.ones(n_vars)
    bounds = Bounds(np.zeros(n_vars), np.ones(n_vars))
    deadline = None if time_limit is None else time.monotonic() + time_limit

    found: list[Solution] = []
    while len(found) < top_k:
        opts: dict[str, float] = {"mip_rel_gap": float(gap)}
        if deadline is not None:
            opts["time_limit"] = max(deadline - time.monotonic(), 1e-3)
        matrix = sparse.vstack(rows, format="csr")
        constraint = LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper))
        res = milp(c, integrality=integrality, bounds=bounds, constraints=constraint, options=opts)
        if res.x is None:
            if found:
                break
            if res.status == 1:
                raise UserError(f"puzzle: the solver found no choice within {time_limit} s")
            raise UserError(_infeasible(cost, limits, min_kept))
        x = np.rint(res.x).astype(int)
        choice = tuple(int(np.argmax(x[offsets[i] : offsets[i + 1]])) for i in range(n))
        picked = offsets[:-1] + np.asarray(choice)
        found.append(
            Solution(
                choice=choice,
                objective=float(c[picked].sum()),
                costs={name: float(np.concatenate(v)[picked].sum()) for name, v in cost.items()},
            )
        )
        cut = np.zeros(n_vars)
        cut[picked] = 1.0
        rows.append(sparse.csr_array(cut[None, :]))
        lower.append([-np.inf])
        upper.append([n - 1.0])
        if deadline is not None and time.monotonic() >= deadline:
            break
    return sorted(found, key=lambda s: s.objective)


def _infeasible(cost: dict[str, list], limits: Mapping[str, float], min_kept: int) -> str:
    parts = [
        f"{name} <= {_fmt(limit)} (the smallest reachable is "
        f"{_fmt(sum(float(v.min()) for v in cost[name]))})"
        for name, limit in limits.items()
    ]
    kept = f" with at least {min_kept} blocks kept" if min_kept else ""
    return f"puzzle: no choice of variants meets {' and '.join(parts) or 'the constraints'}{kept}"


__all__ = ["Solution", "solve"]
