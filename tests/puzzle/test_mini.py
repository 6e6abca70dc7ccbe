"""MiniPuzzle: the grid meets the budget, a planted dead block is the one removed, the
ranking metrics are what they say, and ``jaxprune puzzle`` writes the student and report."""

import json

import jax
import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.converters.native import load_native, save_model
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.evaluation.agreement import next_token_metrics
from jaxprune.nn.model import init_model
from jaxprune.pruning.masks import apply, mask_from_keep
from jaxprune.pruning.scoring import score_model
from jaxprune.puzzle.mini import MiniPuzzleConfig, choices, grid, run_minipuzzle
from jaxprune.testing.configs import PRUNING_CFG as CFG

ROWS = np.asarray(jax.random.randint(jax.random.key(0), (16, 12), 0, 37))
DEAD = 5  # an MLP block of "M-*EM-*E" that does nothing


@pytest.fixture(scope="module")
def planted():
    model = init_model(CFG, 0)
    dead = apply(model, mask_from_keep(model, {"depth": [i for i in range(8) if i != DEAD]}))
    sc = score_model(dead, ROWS, depth_methods=("hidden_mse",), batch_size=8, depth_batches=2)
    return dead, sc.scores


def _without_one_mlp() -> float:
    cfg = CFG.replace(layers=tuple(x for i, x in enumerate(CFG.layers) if i != DEAD))
    return float(count_params(cfg)["total"])


def test_metrics_of_the_parent_against_itself():
    model = init_model(CFG, 1)
    m = next_token_metrics(model, ROWS, batch_size=5)  # a padded last batch
    assert m["tokens"] == 16 * 11 and m["top"].shape == ROWS.shape
    logits = np.asarray(model(ROWS))
    top = logits.argmax(-1)
    np.testing.assert_array_equal(m["top"], top)
    assert m["accuracy"] == pytest.approx(np.mean(top[:, :-1] == ROWS[:, 1:]))
    again = next_token_metrics(model, ROWS, parent_top=m["top"])
    assert again["agreement"] == 1.0 and again["loss"] == pytest.approx(m["loss"], rel=1e-6)


def test_the_dead_block_is_removed_and_the_student_agrees_with_the_parent(planted):
    model, sc = planted
    assert np.argmin(sc["depth_hidden_mse"]) == DEAD
    mini = MiniPuzzleConfig(params=_without_one_mlp(), max_prune=0.5, ffn_divisor=1)
    res = run_minipuzzle(model, sc, ROWS, mini)
    best = res.best
    assert best.params <= mini.params and res.feasible >= len(res.candidates) > 1
    assert best.targets["num_mlp_layers"] == 1 and best.targets["intermediate_size"] == 19
    assert DEAD not in best.extra["kept_blocks"] and len(best.extra["kept_blocks"]) == 7
    assert best.extra["agreement"] == 1.0  # removing a block that does nothing changes nothing
    scores = [c.extra["score"] for c in res.candidates]
    assert scores == sorted(scores, reverse=True)
    picked = choices(model.config, sc, best, "depth_hidden_mse")
    assert [b["block"] for b in picked["blocks"] if not b["kept"]] == [DEAD]


def test_every_candidate_meets_both_caps_and_rank_top_takes_the_largest(planted):
    from jaxprune.search.space import memory_bytes

    model, sc = planted
    full = memory_bytes(CFG, batch=2, context=64)["total"]
    mini = MiniPuzzleConfig(memory_gb=0.8 * full / 1e9, params=0.9, memory_batch=2,
                            memory_context=64, ffn_divisor=4, rank_top=5)  # fmt: skip
    cands, n, feasible = grid(model, sc, mini, "depth_hidden_mse")
    assert len(cands) == 5 and feasible > 5 and n > feasible
    for c in cands:
        assert c.memory <= 0.8 * full and c.params <= 0.9 * count_params(CFG)["total"]
    everything = grid(model, sc, mini.__class__(**{**mini.__dict__, "rank_top": 10**6}),
                      "depth_hidden_mse")[0]  # fmt: skip
    assert min(c.memory for c in cands) >= max(c.memory for c in everything[5:])


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"params": 1.0}, "admits the parent"),
        ({"params": 1000.0}, "no candidate meets"),
        ({}, "give a budget"),
        ({"memory_gb": -1.0}, "must be > 0"),
    ],
)
def test_bad_budgets(planted, kw, message):
    model, sc = planted
    with pytest.raises(UserError, match=message):
        grid(model, sc, MiniPuzzleConfig(**kw), "depth_hidden_mse")


@pytest.mark.slow
def test_puzzle_cli_writes_student_choices_and_report(tmp_path, capsys):
    from jaxprune.testing.configs import compress_config

    cfg = compress_config()
    save_model(tmp_path / "parent", init_model(cfg, 0))
    np.save(tmp_path / "data.npy", np.random.default_rng(0).integers(0, 50, 6000).astype(np.int32))
    base = [
        "puzzle",
        str(tmp_path / "parent"),
        "--mode",
        "mini",
        "--data",
        str(tmp_path / "data.npy"),
        "--samples",
        "16",
        "--seq-len",
        "16",
        "--eval-samples",
        "8",
        "--ffn-divisor",
        "8",
    ]
    assert main([*base, "--out", str(tmp_path / "bad"), "--params", "1.0"]) == 2
    assert "admits the parent" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "pz"
    args = [*base, "--out", str(out), "--params", "0.8", "--distill-steps", "2", "--top-k", "2"]
    assert main(args) == 0  # fmt: skip
    student = load_native(out / "student")[0]
    n = count_params(student.config)["total"]
    assert n <= 0.8 * count_params(cfg)["total"]
    picked = json.loads((out / "choices.json").read_text())
    assert picked["params"] == n
    kept = [b["kind"] for b in picked["blocks"] if b["kept"]]
    assert kept == [x.kind for x in student.config.layers]
    cands = json.loads((out / "candidates.json").read_text())
    assert sum(c["distilled_loss"] is not None for c in cands) == min(2, len(cands))
    report = (out / "report.md").read_text()
    assert "**chosen**" in report and "Removed blocks" in report
