"""The router: gradients reach it through the straight-through masks and the budget loss,
and the budget loss alone drives each budget's most likely child to its target count."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxprune.counts import count_params
from jaxprune.elastic.budget import budget_loss, expected_params, full_params
from jaxprune.elastic.extract import child_params, choose
from jaxprune.elastic.masks import one_hot
from jaxprune.elastic.router import Router, most_likely, probabilities, sample_all
from jaxprune.elastic.space import build_space
from jaxprune.pruning.materialize import shrink_config
from jaxprune.testing.configs import PRUNING_CFG as CFG

BUDGETS = (1.0, 0.75, 0.5)


def _space():
    depth = np.arange(len(CFG.layers), dtype=float)
    return build_space(CFG, depth, fractions=(1.0, 0.875, 0.75, 0.625, 0.5, 0.375), align=1)


def test_straight_through_samples_are_one_hot_with_soft_gradients():
    space = _space()
    router = Router(space, len(BUDGETS), rngs=nnx.Rngs(0))
    gdef, state = nnx.split(router)

    def loss(state, key):
        logits = nnx.merge(gdef, state)(jax.nn.one_hot(1, len(BUDGETS)))
        y = sample_all(logits, key, 1.0)
        return expected_params(space, y) / full_params(space), y

    (val, y), g = jax.value_and_grad(loss, has_aux=True)(state, jax.random.key(0))
    for v in y.values():  # forward: exact one-hot choices
        np.testing.assert_array_equal(np.sort(np.asarray(v), axis=-1)[:, -1], 1.0)
        np.testing.assert_array_equal(np.asarray(v).sum(-1), 1.0)
    norms = [float(jnp.linalg.norm(x)) for x in jax.tree.leaves(g)]
    assert max(norms) > 0  # the parameter count's gradient reaches the router
    kept = space.kept({k: np.argmax(np.asarray(v), -1) for k, v in y.items()})
    assert float(val) * full_params(space) == pytest.approx(
        count_params(shrink_config(CFG, kept))["total"]
    )


def test_budget_loss_pulls_each_budget_to_its_target_and_extraction_meets_it():
    """The budget loss alone (expected count under the router's tempered distribution,
    temperature annealed 1 -> 0.05) brings each budget's most likely child near its target;
    extraction then nests the children and lands each within 3% of its budget."""
    space = _space()
    full = full_params(space)
    router = Router(space, len(BUDGETS), rngs=nnx.Rngs(0))
    gdef, state = nnx.split(router)
    tx = optax.adam(0.05)
    opt = tx.init(state)

    def total(state, tau):
        out = 0.0
        for i, b in enumerate(BUDGETS):
            logits = nnx.merge(gdef, state)(jax.nn.one_hot(i, len(BUDGETS)))
            out += budget_loss(expected_params(space, probabilities(logits, tau)), b * full, full)
        return out

    @jax.jit
    def step(state, opt, tau):
        val, g = jax.value_and_grad(total)(state, tau)
        upd, opt = tx.update(g, opt, state)
        return optax.apply_updates(state, upd), opt, val

    def gaps(state):
        r = nnx.merge(gdef, state)
        lg = [r(jax.nn.one_hot(i, len(BUDGETS))) for i in range(len(BUDGETS))]
        n = [float(expected_params(space, one_hot(space, most_likely(x)))) for x in lg]
        return [abs(m / (b * full) - 1) for m, b in zip(n, BUDGETS)], lg

    before, _ = gaps(state)
    steps = 400
    for t in range(steps):
        state, opt, _ = step(state, opt, 0.05 ** (t / (steps - 1)))
    after, logits = gaps(state)
    assert max(after[1:]) < 0.05 and max(after[1:]) < 0.25 * max(before[1:])
    picked = choose(space, logits, [b * full for b in BUDGETS])
    assert picked[0]["params"] == full and picked[0]["moves"] == 0
    for p, b in zip(picked, BUDGETS):
        assert abs(p["params"] / (b * full) - 1) <= 0.03
        assert p["params"] == child_params(space, p["choices"])
    for big, small in zip(picked, picked[1:]):  # nested: never more units than the larger
        assert all(
            s >= g for k in big["choices"] for g, s in zip(big["choices"][k], small["choices"][k])
        )
