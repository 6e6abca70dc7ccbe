"""Calibration on typed taps: the statistic and score names saved .npz files rely on, and
each record reduced into the statistic of its own block and kind."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxprune.nn.model import HybridLM
from jaxprune.nn.taps import BlockInput, HeadOutputs, MambaX, MLPHidden
from jaxprune.pruning.importance import calibrate, scores
from tests.conftest import hybrid_config

# pattern "M-*EM-": Mamba, MLP, attention, MoE (with a shared expert), Mamba, MLP
STATS = {
    *(f"blocks.{i}.{k}" for i in range(6) for k in ("hidden", "io")),
    "blocks.0.mamba_x",
    "blocks.4.mamba_x",
    "blocks.1.mlp",
    "blocks.5.mlp",
    "blocks.2.heads",
    "blocks.3.router_weight",
    "blocks.3.expert_out",
    "blocks.3.expert_count",
    "blocks.3.expert_mlp",
    "blocks.3.expert_mlp_count",
    "blocks.3.shared_mlp",
    "final_hidden",
    "samples",
    "tokens",
}
SCORES = {
    "hidden",
    "blocks.0.mamba",
    "blocks.4.mamba",
    "blocks.1.mlp",
    "blocks.5.mlp",
    "blocks.2.heads",
    "blocks.3.experts",
    "blocks.3.expert_mlp",
    "blocks.3.router_count",
    "blocks.3.shared_mlp",
    "depth_block_influence",
}


@pytest.fixture(scope="module")
def model_and_tokens():
    cfg = hybrid_config()
    model = HybridLM(cfg, rngs=nnx.Rngs(3))
    return model, np.asarray(jax.random.randint(jax.random.key(3), (3, 10), 0, cfg.vocab_size))


def test_stat_and_score_names_are_unchanged(model_and_tokens):
    model, tokens = model_and_tokens
    stats = calibrate(model, [tokens])
    assert set(stats) == STATS
    assert set(scores(stats, model)) == SCORES


def test_each_record_lands_in_its_blocks_statistic(model_and_tokens):
    """The l2 sums of four kinds of record, recomputed from the records themselves."""
    model, tokens = model_and_tokens
    records = []
    model(tokens, tap=records.append)
    stats = calibrate(model, [tokens])

    def l2(a):  # sum over rows of (mean over tokens of |a|)^2
        return np.sum(np.mean(np.abs(np.asarray(a, np.float64)), axis=1) ** 2, axis=0)

    want = {}
    for r in records:
        if isinstance(r, BlockInput):
            want[f"blocks.{r.block}.hidden"] = l2(r.x)
        elif isinstance(r, MLPHidden):
            want[f"blocks.{r.block}.{'shared_mlp' if r.shared else 'mlp'}"] = l2(r.h)
        elif isinstance(r, HeadOutputs):
            want[f"blocks.{r.block}.heads"] = l2(r.out)
        elif isinstance(r, MambaX):
            want[f"blocks.{r.block}.mamba_x"] = l2(r.x)
    assert len(want) == 6 + 2 + 1 + 2 + 1  # inputs, mlp, heads, mamba_x, shared_mlp
    for k, v in want.items():
        np.testing.assert_allclose(stats[k], v, rtol=1e-4, atol=1e-7, err_msg=k)
