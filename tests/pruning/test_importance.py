"""Calibration scores and group-aware plans: planted importance, devices, targets."""

import jax
import numpy as np
import pytest

from jaxprune.nn.model import init_model
from jaxprune.pruning.importance import calibrate, scores
from jaxprune.pruning.masks import apply, mask_from_keep
from jaxprune.pruning.prune import mamba_keep, plan, prune, top_per_group
from jaxprune.pruning.targets import parse_targets, validate_targets
from jaxprune.sharding import batch_sharding, make_mesh
from jaxprune.testing.configs import PRUNING_CFG as CFG

BATCHES = [np.asarray(jax.random.randint(jax.random.key(i), (8, 12), 0, 37)) for i in range(2)]

# units made useless (all their weights zeroed through a mask)
DEAD = {
    "hidden": [4, 9],
    "blocks.1.mlp": [3, 7],
    "blocks.0.mamba_heads": [0, 3],
    "blocks.0.mamba_channels": [2],
    "blocks.3.experts": [5],
}


@pytest.fixture(scope="module")
def planted():
    model = init_model(CFG, 0)
    sizes = {
        "hidden": 24,
        "blocks.1.mlp": 19,
        "blocks.0.mamba_heads": 6,
        "blocks.0.mamba_channels": 5,
        "blocks.3.experts": 8,
    }
    kept = {k: [i for i in range(sizes[k]) if i not in DEAD[k]] for k in DEAD}
    kept["depth"] = [i for i in range(8) if i != 5]  # block 5 (an MLP) does nothing
    dead = apply(model, mask_from_keep(model, kept))
    return dead, scores(calibrate(dead, BATCHES), dead)


def test_planted_units_score_lowest_and_are_pruned(planted):
    model, sc = planted
    targets = {
        "hidden_size": 22,
        "intermediate_size": 17,
        "mamba_num_heads": 3,
        "mamba_head_dim": 4,
        "n_routed_experts": 4,
        "num_hidden_layers": 7,
    }
    kept = plan(model.config, sc, targets)
    assert set(DEAD["hidden"]).isdisjoint(kept["hidden"]) and len(kept["hidden"]) == 22
    assert set(DEAD["blocks.1.mlp"]).isdisjoint(kept["blocks.1.mlp"])
    assert 2 not in kept["blocks.0.mamba_channels"]
    heads = kept["blocks.0.mamba_heads"]
    assert 0 not in heads and 3 not in heads and len(heads) == 3
    assert 5 not in kept["blocks.3.experts"]
    assert 5 not in kept["depth"] and len(kept["depth"]) == 7
    assert sc["depth_block_influence"][5] == pytest.approx(0.0, abs=1e-6)
    small = prune(model, sc, targets)
    assert small.config.hidden == 22 and small.config.pattern == "M-*EM*E"


def test_group_aware_rankings():
    s = np.array([5.0, 1.0, 0.5, 4.0, 3.0, 2.0])  # groups of 2
    np.testing.assert_array_equal(top_per_group(s, 3, 1), [0, 3, 4])
    heads = np.array([[1, 9, 1], [1, 1, 1], [5, 5, 0], [0, 0, 9]], float)  # H=4, P=3
    kept_heads, channels = mamba_keep(heads, n_groups=2, heads=2, head_dim=2)
    np.testing.assert_array_equal(channels, [1, 2])
    np.testing.assert_array_equal(kept_heads, [0, 3])


def test_scores_equal_on_1_and_8_devices():
    model = init_model(CFG, 1)
    one = calibrate(model, BATCHES)
    mesh = make_mesh(data=8)
    eight = calibrate(model, BATCHES, shardings=batch_sharding(mesh))
    for k in one:
        np.testing.assert_allclose(eight[k], one[k], rtol=2e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hidden_size=30", "larger than the source"),
        ("mamba_num_heads=4", "multiple of n_groups"),
        ("num_attention_heads=3", "multiple of num_key_value_heads"),
        ("hidden_size=0", "must be positive"),
        ("foo=3", "unknown target"),
        ("num_key_value_heads=3", "larger than the source"),
        ("num_key_value_heads=2,num_attention_heads=3", "multiple of num_key_value_heads 2"),
        ("n_routed_experts=6", "multiple of n_group"),
    ],
)
def test_invalid_targets_fail_before_any_work(text, message):
    with pytest.raises(ValueError, match=message):
        validate_targets(CFG, parse_targets(text))


def test_depth_rankings_find_the_dead_block(planted):
    from jaxprune.pruning import depth

    model, _ = planted
    loss = depth.loss_increase(model, BATCHES[:1])
    assert abs(loss[5]) < 1e-6 and np.all(np.delete(np.abs(loss), 5) > 1e-4)
    nmse = depth.iterative_nmse(model, BATCHES[:1])
    assert np.argmin(nmse) == 5 and sorted(nmse.tolist()) == list(range(8))
    mse = depth.hidden_mse(model, BATCHES[:1])
    assert mse[5] < 1e-10 and np.all(np.delete(mse, 5) > 1e-6)


def test_hidden_mse_is_the_materialized_models_final_hidden_mse(planted):
    import jax.numpy as jnp

    from jaxprune.pruning import depth

    model, sc = planted
    tokens = jnp.asarray(BATCHES[0])

    def final(m):
        return np.asarray(m.final_norm(m.hidden_states(tokens)[0]), np.float64)

    mse = depth.hidden_mse(model, BATCHES[:1])
    for i in (0, 3):
        small = prune(model, sc, {"drop_layers": [i]})
        assert len(small.config.layers) == len(model.config.layers) - 1
        want = np.mean((final(small) - final(model)) ** 2)
        np.testing.assert_allclose(mse[i], want, rtol=1e-4)


def test_pruning_keeps_kv_heads(planted):
    model, sc = planted
    small = prune(model, sc, {"num_attention_heads": 2})
    attn = [x for x in small.config.layers if hasattr(x, "num_kv_heads")]
    assert all(a.num_heads == 2 and a.num_kv_heads == 2 for a in attn)


def test_per_block_targets_override_the_uniform_one(planted):
    model, sc = planted
    t = parse_targets(
        "intermediate_size=15,blocks.5.intermediate_size=9,blocks.0.mamba_num_heads=3"
    )
    small = prune(model, sc, t)
    widths = [
        x.intermediate
        for x in small.config.layers
        if hasattr(x, "activation") and not hasattr(x, "num_experts")
    ]
    assert widths == [15, 9]
    assert small.config.layers[0].num_heads == 3 and small.config.layers[4].num_heads == 6
    with pytest.raises(ValueError, match="larger than the source"):
        validate_targets(CFG, parse_targets("blocks.1.intermediate_size=99"))
    with pytest.raises(ValueError, match="unknown target"):
        parse_targets("blocks.x.intermediate_size=3")


def test_kv_group_pruning_only_when_asked(planted):
    model, sc = planted
    kept = plan(model.config, sc, {"num_key_value_heads": 1})
    assert len(kept["blocks.2.kv_heads"]) == 1 and len(kept["blocks.2.heads"]) == 3
    small = prune(model, sc, {"num_key_value_heads": 1, "num_attention_heads": 2})
    assert [
        (a.num_heads, a.num_kv_heads) for a in small.config.layers if hasattr(a, "num_kv_heads")
    ] == [(2, 1), (2, 1)]
    assert "blocks.2.kv_heads" not in plan(model.config, sc, {"num_attention_heads": 4})
