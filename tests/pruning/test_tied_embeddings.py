"""Pruning a tied-embeddings model: embed and head stay one matrix, masked == materialized."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, RopeConfig
from jaxprune.counts import count_leaves, count_params
from jaxprune.nn.model import init_model
from jaxprune.pruning.groups import groups
from jaxprune.pruning.importance import calibrate, scores
from jaxprune.pruning.masks import mask_from_keep, masked_forward, param_paths
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.prune import plan, prune

V = 47
LLAMA = ModelConfig.from_pattern(
    "*-*-",
    vocab_size=V,
    hidden=20,
    attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=6, rope=RopeConfig(500.0)),
    mlp=MLPConfig(intermediate=23, activation="swiglu"),
    tie_embeddings=True,
    initializer_range=0.2,
)
HYBRID = ModelConfig.from_pattern(
    "M-*-",
    vocab_size=V,
    hidden=20,
    mamba=Mamba2Config(num_heads=4, head_dim=4, state=4, n_groups=2, chunk_size=4),
    attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=6),
    mlp=MLPConfig(intermediate=23),
    tie_embeddings=True,
    initializer_range=0.2,
)
TOKENS = np.asarray(jax.random.randint(jax.random.key(2), (3, 11), 0, V))
KEPT = {
    "hidden": [0, 1, 3, 4, 6, 9, 10, 12, 15, 16, 18, 19],
    "blocks.0.heads": [1, 3],
    "blocks.1.mlp": [0, 2, 5, 7, 8, 11, 13, 17, 20],
    "depth": [0, 1, 3],
}


_FORWARD = jax.jit(lambda m, t: m(t))


def _logits(model, tokens=TOKENS):
    return np.asarray(_FORWARD(model, tokens))


@pytest.fixture(scope="module", params=[LLAMA, HYBRID], ids=["llama", "hybrid"])
def model(request):
    return init_model(request.param, 0)


def test_tied_model_has_one_matrix_in_the_hidden_group(model):
    assert "lm_head" not in param_paths(model)
    hidden = next(g for g in groups(model.config, set(param_paths(model))) if g.name == "hidden")
    assert ("embed", 1) in hidden.members
    assert not any(p == "lm_head" for p, _ in hidden.members)
    # the head is the embedding: a row no input token uses moves only its own logit column
    unused = sorted(set(range(V)) - set(TOKENS.reshape(-1).tolist()))[0]
    nudged = nnx.clone(model)
    nudged.embed[...] = model.embed[...].at[unused].add(0.5)
    a, b = _logits(model), _logits(nudged)
    assert np.abs(b[..., unused] - a[..., unused]).min() > 1e-4
    np.testing.assert_array_equal(np.delete(a, unused, -1), np.delete(b, unused, -1))


def test_pruning_hidden_keeps_embed_and_head_consistent(model):
    sc = scores(calibrate(model, [TOKENS]), model)
    small = prune(model, sc, {"hidden_size": 12})
    kept = plan(model.config, sc, {"hidden_size": 12})["hidden"]
    assert small.config.tie_embeddings and small.config.hidden == 12
    assert "lm_head" not in param_paths(small)
    np.testing.assert_array_equal(
        np.asarray(small.embed[...]), np.asarray(model.embed[...])[:, kept]
    )
    assert count_params(small.config)["total"] == count_leaves(small)
    assert count_params(small.config)["embedding"] == V * 12  # one matrix, not two
    out = _logits(small)
    assert out.shape == (3, 11, V) and np.isfinite(out).all()


def test_tied_masked_forward_equals_materialized(model):
    kept = dict(KEPT)
    if model.config.layers[0].kind == "mamba2":
        kept.pop("blocks.0.heads")
        kept["blocks.0.mamba_heads"] = [1, 2]
        kept["blocks.2.heads"] = [0, 2]
    mask = mask_from_keep(model, kept)
    masked = np.asarray(jax.jit(lambda m, k, t: masked_forward(m, k, t))(model, mask, TOKENS))
    small = materialize(model, kept)
    direct = _logits(small)
    assert np.abs(direct - _logits(model)).max() > 1e-3  # the pruning changed something
    np.testing.assert_allclose(masked, direct, atol=1e-4, rtol=1e-4)
    assert small.config.tie_embeddings and "lm_head" not in param_paths(small)
