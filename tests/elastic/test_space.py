"""Elastic core: the importance permutation keeps the function, every budget keeps nested
prefixes, masked parent == extracted child, and the expected parameter count is exact."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.counts import count_params
from jaxprune.elastic.budget import expected_params
from jaxprune.elastic.masks import elastic_mask, one_hot
from jaxprune.elastic.permute import permute_to_importance
from jaxprune.elastic.space import build_space
from jaxprune.nn.model import init_model
from jaxprune.pruning.masks import full_mask, masked_forward
from jaxprune.pruning.materialize import materialize, shrink_config
from jaxprune.testing.configs import PRUNING_CFG as CFG

TOKENS = jax.random.randint(jax.random.key(1), (2, 9), 0, CFG.vocab_size)


def _scores(cfg, seed=0):
    rng = np.random.default_rng(seed)
    s = {"hidden": rng.random(cfg.hidden), "depth": rng.random(len(cfg.layers))}
    for i, layer in enumerate(cfg.layers):
        b = f"blocks.{i}."
        if layer.kind == "mlp":
            s[b + "mlp"] = rng.random(layer.intermediate)
        elif layer.kind == "attention":
            s[b + "heads"] = rng.random(layer.num_heads)
        elif layer.kind == "mamba2":
            s[b + "mamba"] = rng.random((layer.num_heads, layer.head_dim))
        else:
            s[b + "experts"] = rng.random(layer.num_experts)
            s[b + "expert_mlp"] = rng.random(layer.intermediate)
            s[b + "shared_mlp"] = rng.random(layer.shared_intermediate)
    return s


@pytest.fixture(scope="module")
def parent():
    model = init_model(CFG, 0)
    permuted, orders = permute_to_importance(model, _scores(CFG))
    return model, permuted, orders


def _logits(m):
    return np.asarray(jax.jit(lambda m, t: m(t))(m, TOKENS))


def test_permutation_to_importance_order_leaves_the_function_unchanged(parent):
    model, permuted, orders = parent
    assert any(not np.array_equal(p, np.arange(len(p))) for p in orders.values())
    np.testing.assert_allclose(_logits(permuted), _logits(model), atol=2e-5, rtol=2e-5)
    s = _scores(CFG)
    # the best hidden channel comes first; Mamba heads are only reordered within B/C groups
    assert orders["hidden"][0] == np.argmax(s["hidden"])
    heads = orders["blocks.0.mamba_heads"]
    r = CFG.layers[0].num_heads // CFG.layers[0].n_groups
    assert all(set(heads[g * r : (g + 1) * r]) == set(range(g * r, (g + 1) * r)) for g in range(3))
    q = orders["blocks.2.heads"]  # query heads stay in their KV group
    assert set(q[:3]) == {0, 1, 2} and set(q[3:]) == {3, 4, 5}


def _space(model):
    return build_space(
        model.config, _scores(CFG)["depth"], fractions=(1.0, 2 / 3, 1 / 3), max_skip=0.25
    )


def _random_choices(space, rng, floor=None):
    out = {}
    for a in space.axes:
        lo = 0 if floor is None else floor[a.name]
        out[a.name] = rng.integers(lo, a.n_choices, size=len(a.rows))
    return out


def test_every_child_is_a_nested_prefix_and_masked_parent_equals_it(parent):
    _, permuted, _ = parent
    space = _space(permuted)
    assert {a.name for a in space.axes} == {
        "hidden", "mlp", "mamba_heads", "mamba_head_dim", "attn_heads", "experts", "depth"
    }  # fmt: skip
    assert len(space.axis("mlp").rows) == 2  # one FFN width choice per MLP layer
    rng = np.random.default_rng(0)
    base = full_mask(permuted)
    for _ in range(3):
        big = _random_choices(space, rng)
        small = _random_choices(space, rng, floor={k: v.max() for k, v in big.items()})
        small = {k: np.maximum(v, big[k]) for k, v in small.items()}
        kb, ks = space.kept(big), space.kept(small)
        for g, idx in ks.items():  # nested: the smaller child's units are the larger's
            assert set(idx) <= set(kb[g])
        for choices, kept in ((big, kb), (small, ks)):
            child = materialize(permuted, kept)
            mask = elastic_mask(base, space, one_hot(space, choices))
            masked = np.asarray(jax.jit(masked_forward)(permuted, mask, TOKENS))
            np.testing.assert_allclose(masked, _logits(child), atol=1e-4, rtol=1e-4)
            exact = count_params(shrink_config(permuted.config, kept))["total"]
            assert float(expected_params(space, one_hot(space, choices))) == pytest.approx(exact)


def test_expected_params_is_the_exact_expectation_over_choices(parent):
    _, permuted, _ = parent
    space = build_space(
        permuted.config, _scores(CFG)["depth"], axes=("hidden", "mlp", "mamba_heads", "depth"),
        fractions=(1.0, 0.5), uniform=True, max_skip=0.25,
    )  # fmt: skip
    rng = np.random.default_rng(3)
    probs = {a.name: rng.dirichlet(np.ones(a.n_choices), size=len(a.rows)) for a in space.axes}
    names = [a.name for a in space.axes]
    brute = 0.0
    for combo in itertools.product(*[range(space.axis(n).n_choices) for n in names]):
        p = np.prod([probs[n][0, c] for n, c in zip(names, combo)])
        kept = space.kept({n: [c] for n, c in zip(names, combo)})
        brute += p * count_params(shrink_config(permuted.config, kept))["total"]
    got = expected_params(space, {k: jnp.asarray(v) for k, v in probs.items()})
    assert float(got) == pytest.approx(brute, rel=1e-5)


def test_expected_memory_is_exact_for_hard_choices(parent):
    from jaxprune.elastic.budget import Memory, expected_cost
    from jaxprune.search.space import memory_bytes

    _, permuted, _ = parent
    space = _space(permuted)
    mem = Memory(batch=2, context=64)
    rng = np.random.default_rng(7)
    for _ in range(4):
        choices = _random_choices(space, rng)
        kept = space.kept(choices)
        want = memory_bytes(shrink_config(permuted.config, kept), batch=2, context=64)["total"]
        got = float(expected_cost(space, one_hot(space, choices), mem))
        assert got == pytest.approx(want, rel=1e-6)


def test_llama_depth_skips_whole_decoder_layers():
    from jaxprune.testing.configs import llama_config

    cfg = llama_config()  # "*-*-": two decoder layers
    model = init_model(cfg, 0)
    depth = np.array([3.0, 0.5, 1.0, 2.0])  # pair scores 3.5 and 3.0: the second goes first
    space = build_space(cfg, depth, fractions=(1.0, 0.5), max_skip=0.5, align=1)
    d = space.axis("depth")
    assert d.widths == (((0,), (2,)),) and space.depth_order == (2, 3, 0, 1)
    choices = {a.name: [0] * len(a.rows) for a in space.axes}
    choices["depth"] = [1]
    kept = space.kept(choices)
    assert kept["depth"].tolist() == [0, 1]  # the attention + MLP pair 2, 3 skipped
    child = materialize(model, kept)
    assert child.config.pattern == "*-"
    assert (
        float(expected_params(space, one_hot(space, choices)))
        == count_params(child.config)["total"]
    )
