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


def test_pooled_kv_heads_are_group_means_and_keep_the_query_heads():
    from jaxprune.dmc.gqa import pool_kv_heads
    from jaxprune.nn.state import model_params

    model = init_model(llama_config(), 0)
    pooled = pool_kv_heads(model, 2)
    i = next(j for j, x in enumerate(model.config.layers) if x.kind == "attention")
    assert pooled.config.layers[i].num_kv_heads == 1
    assert pooled.config.layers[i].num_heads == model.config.layers[i].num_heads
    a, b = model_params(model), model_params(pooled)
    key = f"blocks.{i}.mixer.k_proj"
    np.testing.assert_allclose(b[key][:, 0], np.asarray(a[key]).mean(axis=1), rtol=1e-6)
    # when both KV heads are equal, pooling does not change the model
    same = dict(a)
    for name in ("k_proj", "v_proj", "k_bias", "v_bias"):
        for j, layer in enumerate(model.config.layers):
            k = f"blocks.{j}.mixer.{name}"
            if layer.kind == "attention" and k in same:
                w = np.array(same[k])
                w[..., 1, :] = w[..., 0, :]
                same[k] = w
    from jaxprune.nn.state import model_from_params

    twin = model_from_params(model.config, same)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 53, (2, 10)))
    np.testing.assert_allclose(
        np.asarray(pool_kv_heads(twin, 2)(tokens)), np.asarray(twin(tokens)), atol=1e-5
    )
