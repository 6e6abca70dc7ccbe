"""Masked == materialized for every axis alone and all together, on a hybrid with MoE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.counts import count_leaves, count_params
from jaxprune.nn.model import init_model
from jaxprune.pruning.masks import mask_from_keep, masked_forward
from jaxprune.pruning.materialize import materialize
from jaxprune.testing.configs import PRUNING_CFG as CFG

TOKENS = jax.random.randint(jax.random.key(1), (2, 9), 0, 37)

AXES = {
    "hidden": {"hidden": [0, 2, 3, 5, 7, 8, 11, 13, 14, 17, 19, 20, 22]},
    "mlp": {"blocks.1.mlp": [1, 2, 4, 8, 9, 15, 18], "blocks.5.mlp": [0, 3]},
    "heads": {"blocks.2.heads": [0, 2, 4, 5], "blocks.6.heads": [1, 3]},
    "mamba_heads": {"blocks.0.mamba_heads": [1, 3, 4], "blocks.4.mamba_heads": [0, 1, 2, 3, 4, 5]},
    "mamba_channels": {"blocks.0.mamba_channels": [0, 2, 4], "blocks.4.mamba_channels": [1]},
    "experts": {"blocks.3.experts": [0, 3, 5, 6], "blocks.7.experts": [1, 2, 4, 7]},
    "expert_mlp": {"blocks.3.expert_mlp": [0, 4, 8], "blocks.7.shared_mlp": [2, 3, 6]},
    "depth": {"depth": [0, 2, 3, 4, 6]},
}


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, 0)


def _run(fn, *args):
    return np.asarray(jax.jit(fn)(*args))


@pytest.mark.parametrize("axis", [*AXES, "all"])
def test_masked_equals_materialized(model, axis):
    kept = {k: v for a in AXES.values() for k, v in a.items()} if axis == "all" else AXES[axis]
    mask = mask_from_keep(model, kept)
    masked = _run(lambda m, k, t: masked_forward(m, k, t), model, mask, TOKENS)
    small = materialize(model, kept)
    direct = _run(lambda m, t: m(t), small, TOKENS)
    full = _run(lambda m, t: m(t), model, TOKENS)
    assert np.abs(full - direct).max() > 1e-3  # the pruning changed something
    np.testing.assert_allclose(masked, direct, atol=1e-4, rtol=1e-4)
    assert count_params(small.config)["total"] == count_leaves(small)


def test_keeping_everything_is_the_identity(model):
    kept = {
        "hidden": np.arange(24),
        "blocks.0.mamba_heads": np.arange(6),
        "blocks.3.experts": np.arange(8),
        "depth": np.arange(8),
    }
    small = materialize(model, kept)
    assert small.config == model.config
    np.testing.assert_array_equal(
        _run(lambda m, t: m(t), small, TOKENS), _run(lambda m, t: m(t), model, TOKENS)
    )


def test_group_invariants_are_enforced(model):
    with pytest.raises(ValueError, match="equal in each of the 3 groups"):
        materialize(model, {"blocks.0.mamba_heads": [0, 1, 2]})
    with pytest.raises(ValueError, match="equal in each of the 2 groups"):
        materialize(model, {"blocks.2.heads": [0, 1, 2, 3]})


def test_depth_pruning_rewrites_the_pattern(model):
    small = materialize(model, {"depth": [0, 2, 3, 7]})
    assert small.config.pattern == "M*EE"


def test_masks_work_inside_a_jitted_gradient_step(model):
    mask = mask_from_keep(model, AXES["heads"] | AXES["mamba_heads"])

    def loss(m, mask, t):
        return jnp.mean(jax.nn.logsumexp(masked_forward(m, mask, t), -1))

    g = jax.jit(jax.grad(loss))(model, mask, TOKENS)
    q = np.asarray(g.blocks[2].mixer.q_proj[...])
    assert np.all(q[:, [1, 3]] == 0) and np.abs(q[:, [0, 2]]).sum() > 0


def test_explicit_kv_group_pruning_masked_equals_materialized(model):
    kept = {"blocks.2.kv_heads": [1], "blocks.2.heads": [3, 4, 5]}
    mask = mask_from_keep(model, kept)
    masked = _run(lambda m, k, t: masked_forward(m, k, t), model, mask, TOKENS)
    small = materialize(model, kept)
    assert small.config.layers[2].num_kv_heads == 1 and small.config.layers[2].num_heads == 3
    np.testing.assert_allclose(masked, _run(lambda m, t: m(t), small, TOKENS), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="removed KV groups"):
        materialize(model, {"blocks.2.kv_heads": [1], "blocks.2.heads": [0, 4, 5]})
