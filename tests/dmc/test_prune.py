"""A DMC model can be calibrated and pruned like any other: its decisions carry no
importance, and the pruned model keeps its DMC blocks (and matches its masked forward)."""

import jax.numpy as jnp
import numpy as np

from jaxprune.config import DMCConfig
from jaxprune.dmc.retrofit import dmc_blocks, retrofit
from jaxprune.nn.model import init_model
from jaxprune.pruning.masks import mask_from_keep, masked_forward
from jaxprune.pruning.prune import plan, prune
from jaxprune.pruning.scoring import score_model
from jaxprune.testing.configs import llama_config


def test_a_dmc_model_calibrates_and_prunes_to_a_dmc_model():
    model = retrofit(init_model(llama_config(), 0), DMCConfig(init_val=0.0))
    rows = np.random.default_rng(0).integers(0, 53, (8, 16))
    scores = score_model(model, rows).scores
    targets = {"num_attention_heads": 2, "intermediate_size": 16}
    small = prune(model, scores, targets)
    assert dmc_blocks(small.config) == dmc_blocks(model.config)
    assert all(small.config.layers[i].num_heads == 2 for i in dmc_blocks(small.config))
    tokens = jnp.asarray(rows[:2])
    mask = mask_from_keep(model, plan(model.config, scores, targets))
    np.testing.assert_allclose(
        np.asarray(masked_forward(model, mask, tokens)), np.asarray(small(tokens)), atol=1e-5
    )
