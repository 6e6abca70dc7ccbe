"""Puzzle scoring: replace-one-block damage matches the materialized replacement, and
blockwise local distillation lowers both the blocks' local error and the rescored damage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.nn.model import init_model
from jaxprune.pruning.masks import mask_from_keep, masked_forward
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.scoring import score_model
from jaxprune.puzzle.library import LibraryConfig, assemble, build_library
from jaxprune.puzzle.score import block_distill, replace_one_scores, trained_parent
from jaxprune.testing.configs import PRUNING_CFG

LIB = LibraryConfig(divisor=2, context=64)


@pytest.fixture(scope="module")
def setup():
    model = init_model(PRUNING_CFG, 0)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, PRUNING_CFG.vocab_size, (8, 17))
    scores = score_model(model, rows[:, :-1], batch_size=4).scores
    library = build_library(model.config, scores, LIB)
    return model, scores, library, [rows[:4], rows[4:]]


def _kl(p_logits, q_logits):
    p = jax.nn.log_softmax(p_logits, -1)
    q = jax.nn.log_softmax(q_logits, -1)
    return float(jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1)))


def test_scores_are_the_materialized_replacements_damage(setup):
    model, scores, library, batches = setup
    kl = replace_one_scores(model, scores, library, batches)
    loss = replace_one_scores(model, scores, library, batches, metric="loss")
    assert [len(s) for s in kl] == [len(row) for row in library]
    for i in range(len(library)):
        assert kl[i][0] == 0.0 and loss[i][0] == 0.0  # the block as is
        assert np.all(kl[i][1:] > 0)
    # one replacement, checked against the materialized model with that block replaced
    i = 2  # attention
    k = len(library[i]) - 2  # its smallest non-removal variant
    chosen = [library[i][k] if j == i else row[0] for j, row in enumerate(library)]
    student = materialize(model, assemble(model.config, scores, chosen))
    want = np.mean([_kl(model(jnp.asarray(b[:, :-1])), student(jnp.asarray(b[:, :-1])))
                    for b in batches])  # fmt: skip
    np.testing.assert_allclose(kl[i][k], want, rtol=1e-4, atol=1e-7)
    # removing a block does more damage than keeping it narrowed, for the MLP here
    assert kl[1][-1] > kl[1][1]
    with pytest.raises(ValueError, match="metric"):
        replace_one_scores(model, scores, library, batches, metric="mse")


def test_block_distillation_lowers_local_error_and_damage(setup):
    model, scores, library, batches = setup
    train = [b[:, :-1] for b in batches]
    trained, errors = block_distill(model, scores, library, train, steps=60, lr=1e-3)
    assert set(trained) == set(range(len(library)))  # every block has a shrunk variant
    for i, (idx, _) in trained.items():
        assert 0 not in idx and all(not library[i][k].removed for k in idx)
        assert errors[i].shape == (2, len(idx))
        assert np.all(errors[i][1] <= errors[i][0])  # never worse than the parent's slice
        assert np.mean(errors[i][1]) < 0.9 * np.mean(errors[i][0])  # and better on the whole
    before = replace_one_scores(model, scores, library, batches)
    after = replace_one_scores(model, scores, library, batches, trained=trained)
    for i, (idx, _) in trained.items():
        assert np.mean(after[i][idx]) < np.mean(before[i][idx])
        untrained = [k for k in range(len(library[i])) if k not in idx]
        np.testing.assert_array_equal(after[i][untrained], before[i][untrained])

    # the trained student: trained weights in place, sliced == the masked trained parent
    choice = [len(row) - 2 for row in library]  # every block's smallest kept variant
    chosen = [row[k] for row, k in zip(library, choice)]
    kept = assemble(model.config, scores, chosen)
    big = trained_parent(model, choice, trained)
    tokens = jnp.asarray(batches[0][:, :-1])
    student = materialize(big, kept)
    np.testing.assert_allclose(
        masked_forward(big, mask_from_keep(big, kept), tokens), student(tokens),
        rtol=2e-5, atol=2e-5,
    )  # fmt: skip
    # and it is not the untrained slice
    plain = materialize(model, kept)
    assert not np.allclose(plain(tokens), student(tokens), atol=1e-4)
    assert _kl(model(tokens), student(tokens)) < _kl(model(tokens), plain(tokens))
