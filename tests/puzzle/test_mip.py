"""The Puzzle MIP: its choices are the brute-force optima under the limits, top-k comes in
order, min_kept holds, and bad input is a one-line UserError."""

import itertools
import time

import numpy as np
import pytest

from jaxprune.errors import UserError
from jaxprune.puzzle.mip import Solution, solve

RNG = np.random.default_rng(0)
SCORES = [RNG.integers(0, 50, 3).astype(float) for _ in range(4)]
COSTS = {
    "params": [RNG.integers(1, 20, 3).astype(float) for _ in range(4)],
    "latency": [RNG.integers(1, 10, 3).astype(float) for _ in range(4)],
}


def brute(scores, costs, limits, keep=None):
    """Every feasible (objective, choice), best first."""
    out = []
    for choice in itertools.product(*(range(len(s)) for s in scores)):
        total = {k: sum(costs[k][i][v] for i, v in enumerate(choice)) for k in limits}
        if all(total[k] <= lim for k, lim in limits.items()) and (keep is None or keep(choice)):
            out.append((sum(scores[i][v] for i, v in enumerate(choice)), choice))
    return sorted(out)


def respects(sol: Solution, costs, limits):
    for name, limit in limits.items():
        total = sum(costs[name][i][v] for i, v in enumerate(sol.choice))
        assert total == pytest.approx(sol.costs[name]) and total <= limit + 1e-9


@pytest.mark.parametrize(
    "limits", [{"params": 30}, {"latency": 14}, {"params": 40, "latency": 16}, {}]
)
def test_matches_brute_force(limits):
    best = brute(SCORES, COSTS, limits)
    assert best, "the test limits must leave a feasible choice"
    [sol] = solve(SCORES, COSTS, limits)
    assert sol.objective == pytest.approx(best[0][0])
    assert sum(SCORES[i][v] for i, v in enumerate(sol.choice)) == pytest.approx(sol.objective)
    respects(sol, COSTS, limits)


def test_top_k_in_order():
    limits = {"params": 44, "latency": 16}
    best = brute(SCORES, COSTS, limits)
    assert len(best) >= 5
    sols = solve(SCORES, COSTS, limits, top_k=5)
    assert len(sols) == 5
    assert len({s.choice for s in sols}) == 5
    assert [s.objective for s in sols] == pytest.approx([b[0] for b in best[:5]])
    for sol in sols:
        respects(sol, COSTS, limits)


def test_top_k_stops_when_choices_run_out():
    limits = {"params": 30}
    best = brute(SCORES, COSTS, limits)
    sols = solve(SCORES, COSTS, limits, top_k=len(best) + 10)
    assert len(sols) == len(best)
    assert {s.choice for s in sols} == {b[1] for b in best}


def test_infeasible_names_smallest_reachable():
    costs = {"params": [np.array([1000.0, 500.0]), np.array([900.0, 734.0])]}
    with pytest.raises(UserError, match=r"params <= 1,000 \(the smallest reachable is 1,234\)"):
        solve([np.zeros(2), np.zeros(2)], costs, {"params": 1000})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limits": {"memory": 10}}, "unknown cost 'memory'"),
        ({"limits": {"params": -1}}, "finite and >= 0"),
        ({"limits": {"params": float("inf")}}, "finite and >= 0"),
        ({"scores": SCORES[:3]}, "blocks"),
        ({"scores": [*SCORES[:3], np.array([])]}, "no variants"),
        ({"scores": [*SCORES[:3], np.array([0.0, np.nan, 1.0])]}, "non-finite"),
        ({"scores": []}, "no blocks"),
        ({"costs": {"params": [*COSTS["params"][:3], np.ones(2)]}}, "shape"),
        ({"min_kept": 2}, "removal"),
        ({"min_kept": 9, "removal": [np.zeros(3, bool)] * 4}, "min_kept"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"scores": SCORES, "costs": COSTS, "limits": {"params": 40}} | kwargs
    with pytest.raises(UserError, match=match) as err:
        solve(args.pop("scores"), args.pop("costs"), args.pop("limits"), **args)
    assert "\n" not in str(err.value)


def test_min_kept():
    # Variant 0 keeps the block, variant 1 removes it; removal is free and scores best.
    scores = [np.array([1.0, 0.0]) for _ in range(5)]
    costs = {"params": [np.array([10.0, 0.0]) for _ in range(5)]}
    removal = [np.array([False, True]) for _ in range(5)]
    [free] = solve(scores, costs, {"params": 100})
    assert free.choice == (1,) * 5
    sols = solve(scores, costs, {"params": 100}, min_kept=3, removal=removal, top_k=3)
    best = brute(scores, costs, {"params": 100}, keep=lambda ch: ch.count(0) >= 3)
    assert [s.objective for s in sols] == pytest.approx([b[0] for b in best[:3]])
    assert all(s.choice.count(0) >= 3 for s in sols)
    with pytest.raises(UserError, match="at least 3 blocks kept"):
        solve(scores, costs, {"params": 25}, min_kept=3, removal=removal)


def test_large_random_is_fast():
    rng = np.random.default_rng(1)
    n, v = 60, 8
    scores = [rng.random(v) for _ in range(n)]
    costs = {
        "params": [rng.integers(1_000_000, 9_000_000, v).astype(float) for _ in range(n)],
        "memory": [rng.random(v) * 100 for _ in range(n)],
    }
    limits = {"params": 0.5 * n * 9_000_000, "memory": 0.5 * n * 100}
    start = time.perf_counter()
    sols = solve(scores, costs, limits, top_k=3)
    assert time.perf_counter() - start < 1.0
    assert len(sols) == 3 and len({s.choice for s in sols}) == 3
    assert [s.objective for s in sols] == sorted(s.objective for s in sols)
    for sol in sols:
        respects(sol, costs, limits)
