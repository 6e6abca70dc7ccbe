"""Importance scores and kept indices on random (not planted) activations, index for index
against a direct numpy transcription of the Minitron estimator (jaxprune.testing.estimators):
every axis, every aggregation, Mamba channels-then-heads within groups, KV groups."""

import jax
import numpy as np
import pytest

from jaxprune.config import (
    AttentionConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
    RopeConfig,
)
from jaxprune.nn.model import init_model
from jaxprune.pruning.importance import AGGREGATIONS, calibrate, scores
from jaxprune.pruning.prune import plan
from jaxprune.testing.estimators import estimator_keep, estimator_scores, flat_params, forward

V, T = 41, 10
CFG = ModelConfig(
    vocab_size=V,
    hidden=24,
    layers=(
        Mamba2Config(num_heads=8, head_dim=6, state=4, n_groups=2, chunk_size=4),
        MLPConfig(intermediate=17, bias=True),
        AttentionConfig(
            num_heads=12, num_kv_heads=4, head_dim=4, rope=RopeConfig(theta=100.0), qkv_bias=True
        ),
        MoEConfig(
            num_experts=8,
            top_k=2,
            intermediate=9,
            n_group=2,
            topk_group=1,
            shared_intermediate=11,
            routed_scaling_factor=1.5,
        ),
        Mamba2Config(num_heads=8, head_dim=6, state=4, n_groups=4, chunk_size=4),
        AttentionConfig(num_heads=12, num_kv_heads=4, head_dim=4, qk_norm=True),
        MLPConfig(intermediate=19, activation="swiglu"),
        MoEConfig(num_experts=8, top_k=2, intermediate=9, router="softmax", activation="swiglu"),
    ),
    initializer_range=0.2,
)
# two calibration batches; the second is right-padded, one row entirely
ROWS = np.asarray(jax.random.randint(jax.random.key(7), (8, T), 0, V))
VALID = np.ones((8, T), bool)
for row, n in zip(range(4, 8), (T, 7, 3, 0), strict=True):
    VALID[row, n:] = False
TARGETS = {
    "hidden_size": 15,
    "intermediate_size": 9,
    "num_attention_heads": 8,  # 2 of the 3 heads in each of the 4 query groups
    "mamba_num_heads": 4,
    "mamba_head_dim": 3,
    "n_routed_experts": 4,
    "moe_intermediate_size": 5,
    "moe_shared_expert_intermediate_size": 6,
    "num_hidden_layers": 6,
}
KV_TARGETS = {"num_key_value_heads": 2, "num_attention_heads": 4}  # 2 of 3 in 2 kept groups


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, 3)


@pytest.fixture(scope="module")
def params(model):
    return flat_params(model)


@pytest.fixture(scope="module", params=AGGREGATIONS)
def both(request, model, params):
    """(aggregation, library scores, numpy reference scores)."""
    agg = request.param
    batches = [(ROWS[:4], VALID[:4]), (ROWS[4:], VALID[4:])]
    lib = scores(calibrate(model, batches, aggregation=agg), model, agg)
    ref = estimator_scores(CFG, params, ROWS, VALID, agg)
    return agg, lib, ref


def test_numpy_forward_is_the_model(model, params):
    """The transcription computes the model (so its activations are the real ones)."""
    got = np.asarray(jax.jit(lambda m, t: m(t))(model, ROWS))
    want, _ = forward(CFG, params, ROWS)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_scores_equal_the_reference_estimator(both):
    agg, lib, ref = both
    assert set(ref) <= set(lib)
    for name, want in ref.items():
        np.testing.assert_allclose(lib[name], want, rtol=2e-4, atol=1e-6, err_msg=f"{agg} {name}")


@pytest.mark.parametrize("targets", [TARGETS, KV_TARGETS], ids=["all_axes", "kv_groups"])
def test_kept_indices_equal_the_reference_index_for_index(both, targets):
    agg, lib, ref = both
    got = plan(CFG, lib, targets)
    want = estimator_keep(CFG, ref, targets)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{agg} {name}")
        assert list(got[name]) == sorted(got[name]), name  # ascending, as slicing expects


def test_every_axis_is_cut_and_rankings_are_not_trivial(both):
    """The targets really cut each group, and the kept sets are not just the first indices
    (so the comparison above can tell rankings apart)."""
    _, lib, _ = both
    kept = plan(CFG, lib, TARGETS) | plan(CFG, lib, KV_TARGETS)
    groups = {k.rsplit(".", 1)[-1] for k in kept}
    assert groups == {
        "hidden", "mlp", "heads", "kv_heads", "mamba_heads", "mamba_channels", "experts",
        "expert_mlp", "shared_mlp", "depth",
    }  # fmt: skip
    not_prefix = [k for k, v in kept.items() if list(v) != list(range(len(v)))]
    assert len(not_prefix) >= len(kept) - 3, not_prefix
