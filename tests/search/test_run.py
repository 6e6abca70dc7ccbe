"""run_search: the one search function behind ``jaxprune search`` and ``compress``."""

import numpy as np
import pytest

from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.pruning.scoring import score_model
from jaxprune.search.run import SearchConfig, run_search, search_with
from jaxprune.search.search import Budget
from jaxprune.search.space import SearchSpace, memory_bytes
from jaxprune.testing.configs import compress_config

CFG = compress_config()
ROWS = np.tile(np.random.default_rng(0).integers(0, 50, size=(1, 13)), (16, 1)).astype(np.int32)
SPACE = SearchSpace(axes=("hidden_size", "intermediate_size"), divisor=4)


@pytest.fixture(scope="module")
def scored():
    model = init_model(CFG, 0)
    return model, score_model(model, ROWS, batch_size=8).scores


def test_memory_budget_bounds_every_candidate(scored):
    model, sc = scored
    full = memory_bytes(CFG, batch=2, context=64)["total"]
    budget = Budget(params=1.0, memory_gb=0.8 * full / 1e9, batch=2, context=64)
    result = run_search(model, sc, ROWS, budget, SPACE, top_k=3)
    assert len(result.candidates) == 3
    for c in result.candidates:
        assert c.memory <= 0.8 * full
        assert memory_bytes(_config(model, sc, c.targets), batch=2, context=64)["total"] == c.memory
    assert result.best.final_loss == min(c.final_loss for c in result.candidates)
    assert result.source == count_params(CFG)


def _config(model, sc, targets):
    from jaxprune.pruning.prune import prune

    return prune(model, sc, targets).config


@pytest.mark.slow
def test_distillation_rerank_scores_every_candidate_after_distilling(scored, tmp_path):
    model, sc = scored
    cfg = SearchConfig(params=0.9, top_k=2, divisor=4, distill_steps=3, eval_samples=8)
    result = search_with(model, sc, ROWS, cfg)
    assert all(c.distilled_loss is not None for c in result.candidates)
    # every candidate was trained (its loss moved) before being ranked
    assert all(abs(c.distilled_loss - c.loss) > 1e-6 for c in result.candidates)
    assert result.best.final_loss == min(c.distilled_loss for c in result.candidates)
    paths = result.write(tmp_path / "report")
    assert (tmp_path / "report" / "report.md") in paths


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"params": 0.0}, "budget must be > 0"),
        ({"params": 0.5, "memory_gb": -1.0}, "memory_gb"),
        ({"params": 0.5, "max_prune": 1.0}, "max_prune"),
        ({"params": 0.5, "top_k": 0}, "top_k"),
    ],
)
def test_search_config_rejects_bad_settings(kw, msg):
    with pytest.raises(UserError, match=msg):
        SearchConfig(**kw)
