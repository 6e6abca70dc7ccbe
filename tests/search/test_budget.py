"""The search budget as a user writes it: a fraction or a count, never ambiguous; a budget
that admits the unpruned model is refused; "nothing fits" names the smallest candidate and
what bounds it; one candidate per architecture."""

import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.pruning.scoring import score_model
from jaxprune.search.budget import parse_params
from jaxprune.search.run import SearchConfig
from jaxprune.search.search import Budget, shortlist
from jaxprune.search.space import SearchSpace, candidates
from jaxprune.testing.configs import compress_config

CFG = compress_config()
ROWS = np.random.default_rng(0).integers(0, 50, size=(8, 13)).astype(np.int32)
#: dropping to 1-2 blocks (M, M*) removes every MLP, so intermediate_size choices collide
DEPTH = SearchSpace(axes=("intermediate_size", "num_hidden_layers"), divisor=4, max_prune=0.75)


@pytest.fixture(scope="module")
def scored():
    model = init_model(CFG, 0)
    return model, score_model(model, ROWS, batch_size=8).scores


@pytest.mark.parametrize(
    "text, value",
    [
        ("0.6", 0.6),
        ("1", 1.0),
        ("4e9", 4e9),
        ("4B", 4e9),
        ("4b", 4e9),
        ("350M", 350e6),
        ("1.2e9", 1.2e9),
        ("800K", 800e3),
        ("1000", 1000.0),
        (0.5, 0.5),
    ],
)
def test_fractions_and_counts_parse(text, value):
    assert parse_params(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("1.5", "neither a fraction nor a count"),
        ("999", "neither a fraction nor a count"),
        ("0.5K", "neither a fraction nor a count"),
        ("4X", "not a number"),
        ("0", "must be > 0"),
        ("-0.5", "not a number"),
    ],
)
def test_ambiguous_or_bad_budgets_are_refused_saying_how_to_write_them(text, msg):
    with pytest.raises(UserError, match=msg) as e:
        parse_params(text)
    if "neither" in msg:
        assert "0.6" in str(e.value) and "4B" in str(e.value)


def test_search_config_shares_the_parser():
    assert SearchConfig(params="350M").params == 350e6  # a gin string binding
    with pytest.raises(UserError, match="neither a fraction nor a count"):
        SearchConfig(params=1.5)


def test_the_cli_refuses_an_ambiguous_budget_before_loading_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            ["search", str(tmp_path / "no-model"), "--data", "x.npy", "--out", "o"]
            + ["--params", "1.5"]
        )
    code = e.value.code
    err = capsys.readouterr().err
    assert code == 2 and "argument --params" in err and "e.g. 0.6" in err


@pytest.mark.parametrize("params", [1.0, 5e9])
def test_a_budget_that_admits_the_unpruned_model_is_refused(scored, params):
    model, sc = scored
    with pytest.raises(UserError, match="admits the unpruned model"):
        shortlist(model, sc, Budget(params=params), DEPTH, top_k=3)


def test_nothing_fits_names_the_smallest_candidate_and_its_bounds(scored):
    model, sc = scored
    space = SearchSpace(axes=("hidden_size",), divisor=8, max_prune=0.25)
    smallest = min(count_params(c)["total"] for _, c in candidates(CFG, sc, space))
    with pytest.raises(UserError) as e:
        shortlist(model, sc, Budget(params=0.3), space, top_k=3)
    msg = str(e.value)
    assert f"smallest candidate has {smallest:,}" in msg
    assert "--max-prune 0.25" in msg and "--divisor 8" in msg


def test_nothing_fits_a_memory_budget_names_it(scored):
    model, sc = scored
    with pytest.raises(UserError, match="raise --memory-gb"):
        shortlist(model, sc, Budget(params=1.0, memory_gb=1e-9), DEPTH, top_k=3)


def test_candidates_with_the_same_architecture_are_one(scored):
    model, sc = scored
    budget = Budget(params=0.99)
    limit = 0.99 * count_params(CFG)["total"]
    fitting = [s for _, s in candidates(CFG, sc, DEPTH) if count_params(s)["total"] <= limit]
    assert len(set(fitting)) < len(fitting)  # the space does hold duplicates
    got = shortlist(model, sc, budget, DEPTH, top_k=len(fitting))
    configs = [next(s for t, s in candidates(CFG, sc, DEPTH) if t == c.targets) for c in got]
    assert len(got) == len(set(configs)) == len(set(fitting))
