"""Puzzle's variant library: variants are slices of the parent, their costs add up to the
assembled student's, and a chosen assembly masked in the parent equals the materialized
heterogeneous student."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.counts import count_params, layer_params
from jaxprune.nn.model import init_model
from jaxprune.pruning.masks import mask_from_keep, masked_forward
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.scoring import score_model
from jaxprune.puzzle.library import LibraryConfig, assemble, build_library, shared_costs
from jaxprune.search.space import memory_bytes
from jaxprune.testing.configs import PRUNING_CFG


@pytest.fixture(scope="module")
def parent():
    model = init_model(PRUNING_CFG, 0)
    rows = np.random.default_rng(0).integers(0, PRUNING_CFG.vocab_size, (4, 16))
    return model, score_model(model, rows, batch_size=4).scores


LIB = LibraryConfig(divisor=2, context=64)


def test_every_block_gets_kinds_variants(parent):
    model, scores = parent
    library = build_library(model.config, scores, LIB)
    assert len(library) == len(model.config.layers)
    for i, (row, layer) in enumerate(zip(library, model.config.layers)):
        assert row[0].name == "keep" and row[0].layer == layer
        assert row[-1].removed and row[-1].params == 0
        assert len({v.layer for v in row}) == len(row)  # no duplicates
        assert all(v.block == i for v in row)
        # smaller variants cost fewer parameters than the block as is
        assert all(v.params < row[0].params for v in row[1:])
    kinds = {layer.kind: len(row) for row, layer in zip(library, model.config.layers)}
    assert kinds["attention"] >= 4 and kinds["mlp"] >= 4 and kinds["moe"] >= 4


def test_costs_add_up_and_masked_equals_materialized(parent):
    model, scores = parent
    cfg = model.config
    library = build_library(cfg, scores, LIB)
    rng = np.random.default_rng(3)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 12)), jnp.int32)
    for _ in range(3):
        chosen = [row[rng.integers(len(row))] for row in library]
        if all(v.removed for v in chosen):
            continue
        kept = assemble(cfg, scores, chosen)
        student = materialize(model, kept)
        shared = shared_costs(cfg, LIB)
        assert count_params(student.config)["total"] == shared["params"] + sum(
            v.params for v in chosen
        )
        mem = memory_bytes(student.config, batch=LIB.batch, context=LIB.context)["total"]
        assert mem == shared["memory"] + sum(v.memory for v in chosen)
        kept_layers = [v.layer for v in chosen if not v.removed]
        assert list(student.config.layers) == kept_layers
        for v in chosen:
            if not v.removed:
                assert v.params == layer_params(v.layer, cfg.hidden)[0]
        masked = masked_forward(model, mask_from_keep(model, kept), tokens)
        np.testing.assert_allclose(masked, student(tokens), rtol=2e-5, atol=2e-5)
