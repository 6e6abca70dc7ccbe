"""Puzzle's full mode: the MIP's choice meets every budget and is what the student is, a
planted dead block is the one removed, cached scores are reused, the latency budget holds
on measured costs, and ``jaxprune puzzle`` writes the student, choices and report."""

import json

import jax
import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.converters.native import load_native, save_model
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.pruning.masks import apply, mask_from_keep
from jaxprune.pruning.scoring import score_model
from jaxprune.puzzle.full import PuzzleConfig, run_puzzle
from jaxprune.puzzle.latency import latency_costs
from jaxprune.puzzle.library import LibraryConfig, build_library
from jaxprune.search.space import memory_bytes
from jaxprune.testing.configs import PRUNING_CFG as CFG

ROWS = np.asarray(jax.random.randint(jax.random.key(0), (24, 13), 0, 37))
DEAD = 5  # an MLP block of "M-*EM-*E" that does nothing
SMALL = dict(ffn_divisor=2, memory_context=64, score_samples=16, eval_samples=8)


@pytest.fixture(scope="module")
def planted():
    model = init_model(CFG, 0)
    dead = apply(model, mask_from_keep(model, {"depth": [i for i in range(8) if i != DEAD]}))
    return dead, score_model(dead, ROWS[:16], batch_size=8).scores


def _run(planted, tmp=None, log=None, **kw):
    model, scores = planted
    cfg = PuzzleConfig(**{**SMALL, **kw})
    return run_puzzle(model, scores, ROWS[:16], ROWS[16:], cfg, cache_dir=tmp, batch_size=8,
                      log=log or (lambda s: None))  # fmt: skip


def test_the_dead_block_is_removed_at_its_own_price(planted):
    model, _ = planted
    without = count_params(CFG.replace(layers=tuple(x for i, x in enumerate(CFG.layers)
                                                    if i != DEAD)))["total"]  # fmt: skip
    res = _run(planted, params=float(without), top_k=3)
    chosen = res.chosen()
    assert [v.removed for v in chosen] == [i == DEAD for i in range(8)]
    assert res.best["objective"] == pytest.approx(0.0, abs=1e-6)  # removing it costs nothing
    assert res.best["kl"] == min(s["kl"] for s in res.solutions)  # ranked by faithfulness
    assert res.best["kl"] == pytest.approx(0.0, abs=1e-6) and res.best["agreement"] == 1.0
    # the top solutions are distinct, ordered by their summed score, all within budget
    assert len({tuple(s["choice"]) for s in res.solutions}) == len(res.solutions) == 3
    objs = [s["objective"] for s in res.solutions]
    assert objs == sorted(objs)
    assert all(s["costs"]["params"] <= without for s in res.solutions)
    assert count_params(res.student.config)["total"] == res.best["costs"]["params"]


def test_every_budget_holds_and_costs_are_the_students(planted):
    model, _ = planted
    n = count_params(CFG)
    mem = memory_bytes(CFG, batch=1, context=64)["total"]
    res = _run(planted, params=0.7, active_params=0.75, memory_gb=0.8 * mem / 1e9, top_k=2)
    s = res.student.config
    c = count_params(s)
    assert c["total"] <= 0.7 * n["total"] and c["active"] <= 0.75 * n["active"]
    assert memory_bytes(s, batch=1, context=64)["total"] <= 0.8 * mem
    assert res.best["costs"]["params"] == c["total"]
    assert res.best["costs"]["memory"] == memory_bytes(s, batch=1, context=64)["total"]
    # heterogeneous: the kept blocks of one kind do not all share a shape
    shapes = {x.kind: set() for x in s.layers}
    for x in s.layers:
        shapes[x.kind].add(x)
    assert len(s.layers) < len(CFG.layers) or any(len(v) > 1 for v in shapes.values())


def test_scores_and_bld_are_cached_and_reused(planted, tmp_path):
    lines = []
    first = _run(planted, tmp_path, lines.append, params=0.7, top_k=1, bld_steps=3)
    assert not any("cached" in s for s in lines)
    lines.clear()
    again = _run(planted, tmp_path, lines.append, params=0.6, top_k=2, bld_steps=3)
    assert {"puzzle: cached scores", "puzzle: cached bld", "puzzle: cached bld_scores"} <= {
        s.split(" (")[0] for s in lines
    }
    for a, b in zip(first.scores, again.scores, strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.best["costs"]["params"] <= 0.6 * count_params(CFG)["total"]
    lines.clear()
    _run(planted, tmp_path, lines.append, params=0.6, bld_steps=4)
    assert "puzzle: bld inputs changed, recomputing" in lines
    assert any(s.startswith("puzzle: cached scores") for s in lines)


def test_latency_costs_are_measured_per_layer_and_the_budget_holds():
    cfg = CFG.replace(layers=CFG.layers[:3])
    model = init_model(cfg, 0)
    scores = score_model(model, ROWS[:8], batch_size=8).scores
    library = build_library(cfg, scores, LibraryConfig(divisor=2, context=64))
    costs, shared = latency_costs(cfg, library, context=8, copies=2, reps=3)
    assert shared >= 0 and [len(c) for c in costs] == [len(r) for r in library]
    for row, c in zip(library, costs, strict=True):
        assert all((x == 0) == v.removed or x == 0 for v, x in zip(row, c, strict=True))
        assert np.all(c >= 0)
        assert c[-1] == 0 and row[-1].removed
    from jaxprune.puzzle.mip import solve

    limit = shared + 0.6 * sum(float(c[0]) for c in costs)
    sols = solve([np.arange(len(r), dtype=float)[::-1] for r in library], {"latency": costs},
                 {"latency": limit - shared}, top_k=2)  # fmt: skip
    for s in sols:
        assert s.costs["latency"] <= limit - shared + 1e-9


@pytest.mark.parametrize(
    "kw, message",
    [
        ({}, "give a budget"),
        ({"params": 1.0}, "admits the parent"),
        ({"params": 1500}, "does not even cover"),  # the embeddings alone are 1776
        ({"params": 0.5, "mlp_fractions": "0.5,2"}, r"mlp_fractions must lie in \(0, 1\]"),
        ({"params": 0.5, "mlp_fractions": "half"}, "not a list of fractions"),
        ({"params": 0.5, "latency_ms": -1.0}, "latency_ms must be > 0"),
    ],
)
def test_bad_budgets(planted, kw, message):
    with pytest.raises(UserError, match=message):
        _run(planted, **kw)


def test_cli_writes_student_choices_report_and_reuses_its_cache(tmp_path, capsys):
    from jaxprune.testing.configs import compress_config

    cfg = compress_config()
    save_model(tmp_path / "parent", init_model(cfg, 0))
    np.save(tmp_path / "data.npy", np.random.default_rng(0).integers(0, 50, 6000).astype(np.int32))
    base = ["puzzle", str(tmp_path / "parent"), "--data", str(tmp_path / "data.npy"),
            "--samples", "16", "--seq-len", "16", "--score-samples", "16",
            "--eval-samples", "8", "--ffn-divisor", "8", "--memory-context", "64"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "bad"), "--params", "1.0"]) == 2
    assert "admits the parent" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bad"), "--params", "0.5", "--rank-top", "3"]) == 2
    assert "--rank-top is an option of --mode mini" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "pz"
    args = [*base, "--out", str(out), "--params", "0.6", "--top-k", "2", "--bld-steps", "2"]
    assert main(args) == 0
    student = load_native(out / "student")[0]
    n = count_params(student.config)["total"]
    assert n <= 0.6 * count_params(cfg)["total"]
    picked = json.loads((out / "choices.json").read_text())
    assert picked["costs"]["params"] == n
    kept = [b for b in picked["blocks"] if not b["removed"]]
    assert [b["kind"] for b in kept] == [x.kind for x in student.config.layers]
    sols = json.loads((out / "solutions.json").read_text())
    assert sum(s["chosen"] for s in sols) == 1 and 1 <= len(sols) <= 2
    report = (out / "report.md").read_text()
    assert "**chosen**" in report and "BLD local error" in report
    capsys.readouterr()
    assert main([*args[:-4], "--top-k", "1", "--bld-steps", "2"]) == 0  # same OUT: a rerun
    assert "puzzle: cached bld_scores" in capsys.readouterr().err
    assert (out / "student").is_dir() and not list(out.glob(".staging-*"))
