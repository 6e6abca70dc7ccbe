import json

import jax
import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.converters.api import load_model
from jaxprune.counts import count_params
from jaxprune.nn.model import init_model
from jaxprune.pruning.importance import calibrate, scores
from jaxprune.search.search import Budget, evaluate, pareto, shortlist
from jaxprune.search.space import SearchSpace, axis_choices, memory_bytes
from jaxprune.testing.configs import PRUNING_CFG as CFG

ROWS = np.asarray(jax.random.randint(jax.random.key(0), (8, 12), 0, 37))


@pytest.fixture(scope="module")
def scored():
    model = init_model(CFG, 0)
    return model, scores(calibrate(model, [ROWS]), model)


def test_axis_grids_respect_divisors_and_groups():
    space = SearchSpace(divisor=4, max_prune=0.5)
    ch = axis_choices(CFG, space)
    assert ch["hidden_size"] == [12, 16, 20, 24]
    assert all(v % 3 == 0 for v in ch["mamba_num_heads"])  # n_groups = 3
    assert all(v % 2 == 0 for v in ch["num_attention_heads"])  # kv heads = 2
    assert ch["num_hidden_layers"][-1] == 8


def test_shortlist_fits_the_budget_and_is_closest_to_it(scored):
    model, sc = scored
    src = count_params(CFG)["total"]
    space = SearchSpace(axes=("hidden_size", "intermediate_size", "mamba_num_heads"), divisor=4)
    cands = shortlist(model, sc, Budget(params=0.8), space, top_k=4)
    assert len(cands) == 4 and all(c.params <= 0.8 * src for c in cands)
    assert cands[0].params >= cands[-1].params
    with pytest.raises(ValueError, match="no candidate fits"):
        shortlist(model, sc, Budget(params=0.01), space, top_k=4)
    with pytest.raises(ValueError, match="GB"):
        shortlist(model, sc, Budget(params=1.0, memory_gb=1e-9), space, top_k=4)


def test_memory_counts_kv_and_ssm_state():
    m = memory_bytes(CFG, batch=2, context=100, weight_bytes=2, cache_bytes=2)
    assert m["kv"] == 2 * (2 * 2 * 100 * 2 * 4 * 2)  # 2 attention blocks
    assert m["ssm"] == 2 * (2 * 6 * 5 * 7 * 4)
    assert m["total"] == m["weights"] + m["kv"] + m["ssm"] + m["conv"]


def test_evaluate_and_pareto(scored):
    model, sc = scored
    space = SearchSpace(axes=("hidden_size", "num_hidden_layers"), divisor=4)
    cands = evaluate(model, sc, shortlist(model, sc, Budget(params=0.9), space, top_k=2), ROWS)
    assert all(np.isfinite(c.loss) and c.decode_ms > 0 for c in cands)
    assert pareto([(1, 3), (2, 2), (3, 3), (2, 1)]) == [True, False, False, True]


@pytest.mark.slow
def test_search_cli_writes_report_plot_and_best_model(tmp_path, capsys):
    model = init_model(CFG.replace(name="src"), 0)
    mamba = CFG.layers[0]
    assert mamba.dt_limit[0] == 0.0  # a jaxprune-born model: export as native only
    from jaxprune.converters.native import save_model

    (tmp_path / "src").mkdir()
    save_model(tmp_path / "src", model)
    np.save(tmp_path / "data.npy", np.asarray(ROWS))
    code = main(
        [
            "search",
            str(tmp_path / "src"),
            "--data",
            str(tmp_path / "data.npy"),
            "--params",
            "0.8",
            "--top-k",
            "2",
            "--divisor",
            "4",
            "--seq-len",
            "12",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**best**" in report and report.count("| hidden_size=") == 2
    assert (tmp_path / "out" / "search.png").stat().st_size > 1000
    best, _ = load_model(tmp_path / "out" / "best")
    cands = json.loads((tmp_path / "out" / "candidates.json").read_text())
    assert count_params(best.config)["total"] in [c["params"] for c in cands]


@pytest.mark.slow
def test_short_distillation_rerank_improves_the_candidate(scored):
    from jaxprune.search.distill import make_short_distill

    model, sc = scored
    space = SearchSpace(axes=("hidden_size",), divisor=4)
    cands = shortlist(model, sc, Budget(params=0.85), space, top_k=1)
    rows = np.asarray(jax.random.randint(jax.random.key(3), (16, 13), 0, 37))
    distill = make_short_distill(model, rows, steps=6, batch_size=8, lr=3e-3)
    (c,) = evaluate(model, sc, cands, rows, distill=distill)
    assert np.isfinite(c.distilled_loss) and c.distilled_loss < c.loss


def test_minipuzzle_grid_over_blocks_kept_per_kind(scored):
    """Per-kind block counts as search axes: every candidate keeps exactly the chosen number
    of blocks of each kind (the depth plans of the axes intersect), priced exactly."""
    from jaxprune.errors import UserError
    from jaxprune.search.space import candidates

    space = SearchSpace(axes=("intermediate_size", "num_mamba_layers", "num_mlp_layers"),
                        max_prune=0.5, divisor=4)  # fmt: skip
    ch = axis_choices(CFG, space)
    assert ch["num_mamba_layers"] == [1, 2] and ch["num_mlp_layers"] == [1, 2]
    depth = np.arange(len(CFG.layers), dtype=float)[::-1]  # later blocks ranked lower
    scores = {**scored[1], "depth_block_influence": depth}
    seen = set()
    for targets, cfg in candidates(CFG, scores, space):
        kinds = [x.kind for x in cfg.layers]
        assert kinds.count("mamba2") == targets["num_mamba_layers"]
        assert kinds.count("mlp") == targets["num_mlp_layers"]
        assert kinds.count("attention") == 2 and kinds.count("moe") == 2
        seen.add((targets["num_mamba_layers"], targets["num_mlp_layers"]))
        assert count_params(cfg)["total"] > 0
    assert seen == {(1, 1), (1, 2), (2, 1), (2, 2)}
    with pytest.raises(UserError, match="two depth axes"):
        list(candidates(CFG, scores, SearchSpace(axes=("num_mlp_layers", "num_hidden_layers"))))


def test_candidates_are_priced_with_the_depth_ranking_that_prunes_them(scored):
    """Dropping blocks by another ranking than block influence changes which kinds go, so
    the shortlist must price each candidate with the ranking ``evaluate`` prunes by."""
    from jaxprune.pruning.prune import prune

    model, sc = scored
    kinds = [x.kind for x in CFG.layers]
    moe_last = np.array([0.0 if k == "moe" else 1.0 + i for i, k in enumerate(kinds)])
    sc = {**sc, "depth_x": moe_last, "depth_block_influence": moe_last[::-1].copy()}
    space = SearchSpace(axes=("num_hidden_layers",), max_prune=0.5)
    budget = Budget(params=count_params(CFG)["total"] - 1)
    for depth in ("depth_x", "depth_block_influence"):
        cands = shortlist(model, sc, budget, space, top_k=10, depth=depth)
        assert len(cands) >= 2
        for c in cands:
            small = prune(model, sc, c.targets, depth)
            assert c.params == count_params(small.config)["total"], (depth, c.targets)
