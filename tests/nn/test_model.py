"""The hybrid LM: cached decoding, causality, packing, gradients, heterogeneous widths."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig
from jaxprune.counts import count_leaves, count_params
from jaxprune.nn import HybridLM
from jaxprune.testing.configs import hybrid_config, llama_config

CONFIGS = {"hybrid": hybrid_config, "llama": llama_config}


def _forward(model, tokens, **kw):
    return jax.jit(lambda m, t: m(t, **kw))(model, tokens)


def _tokens(cfg, b=2, t=13, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size)


@pytest.mark.parametrize("name", CONFIGS)
def test_token_by_token_decoding_equals_prefill_logits(name):
    cfg = CONFIGS[name]()
    model = HybridLM(cfg, rngs=nnx.Rngs(0))
    tokens = _tokens(cfg)
    full = _forward(model, tokens)
    step = jax.jit(lambda m, t, c: m.step(t, c))
    logits, cache = step(model, tokens[:, :5], model.init_cache(2, 16))
    outs = [logits]
    for t in range(5, tokens.shape[1]):
        logits, cache = step(model, tokens[:, t : t + 1], cache)
        outs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-4, atol=1e-4)
    assert int(cache.pos) == tokens.shape[1]


@pytest.mark.parametrize("name", CONFIGS)
def test_changing_a_token_never_changes_earlier_logits(name):
    cfg = CONFIGS[name]()
    model = HybridLM(cfg, rngs=nnx.Rngs(1))
    tokens = _tokens(cfg, b=1, t=17)
    t = 9
    other = tokens.at[0, t].set((tokens[0, t] + 1) % cfg.vocab_size)
    a, b = _forward(model, tokens), _forward(model, other)
    np.testing.assert_array_equal(a[:, :t], b[:, :t])
    assert not np.allclose(a[:, t], b[:, t])


def test_packed_documents_equal_separate_runs(hybrid_cfg):
    """With seq_idx, no attention, conv tap or SSM state crosses a document boundary."""
    model = HybridLM(hybrid_cfg, rngs=nnx.Rngs(2))
    tokens = _tokens(hybrid_cfg, b=1, t=19)
    cut = 11  # not a multiple of the chunk size 8
    seq = jnp.array([[0] * cut + [1] * (19 - cut)])
    packed = _forward(model, tokens, seq_idx=seq)
    first = _forward(model, tokens[:, :cut])
    second = _forward(model, tokens[:, cut:])
    np.testing.assert_allclose(packed[:, :cut], first, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(packed[:, cut:], second, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
def test_jit_grad_is_finite_and_reaches_every_parameter(name):
    cfg = CONFIGS[name]()
    model = HybridLM(cfg, rngs=nnx.Rngs(3))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens = _tokens(cfg, t=11)

    @jax.jit
    def loss(p, tokens):
        logits = nnx.merge(graphdef, p, rest)(tokens[:, :-1])
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, tokens[:, 1:, None], -1).mean()

    value, grads = jax.value_and_grad(loss)(params, tokens)
    assert np.isfinite(float(value))
    for path, g in nnx.to_flat_state(grads):
        g = np.asarray(g[...])
        assert np.isfinite(g).all(), path
        assert np.abs(g).sum() > 0, f"no gradient reaches {path}"


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("tie", [False, True])
def test_parameter_count_equals_sum_of_leaves(name, tie):
    cfg = CONFIGS[name](tie_embeddings=tie)
    counts = count_params(cfg)
    assert counts["total"] == count_leaves(HybridLM(cfg, rngs=nnx.Rngs(0)))
    kinds = sum(v for k, v in counts.items() if k not in ("total", "active", "embedding"))
    assert counts["total"] == counts["embedding"] + cfg.hidden + kinds


def test_active_parameters_count_only_top_k_experts():
    moe = MoEConfig(num_experts=8, top_k=2, intermediate=5, shared_intermediate=3, latent=4)
    cfg = ModelConfig(vocab_size=10, hidden=6, layers=(moe,))
    counts = count_params(cfg)
    per_expert = 2 * 4 * 5
    assert counts["total"] - counts["active"] == 6 * per_expert
    assert counts["total"] == count_leaves(HybridLM(cfg, rngs=nnx.Rngs(0)))


def test_every_layer_with_its_own_dims_runs_and_decodes():
    layers = (
        Mamba2Config(num_heads=4, head_dim=3, state=5, n_groups=2, chunk_size=4),
        MLPConfig(intermediate=7),
        Mamba2Config(num_heads=3, head_dim=5, state=2, n_groups=1, chunk_size=8, conv_kernel=3),
        AttentionConfig(num_heads=6, num_kv_heads=3, head_dim=4),
        MLPConfig(intermediate=13, activation="swiglu"),
        AttentionConfig(num_heads=2, num_kv_heads=1, head_dim=9, qkv_bias=True),
        MoEConfig(num_experts=6, top_k=3, intermediate=5, router="softmax", activation="swiglu"),
        Mamba2Config(num_heads=2, head_dim=2, state=3, n_groups=2, proj_bias=True),
    )
    cfg = ModelConfig(vocab_size=31, hidden=10, layers=layers)
    model = HybridLM(cfg, rngs=nnx.Rngs(4))
    tokens = _tokens(cfg, t=9)
    full = _forward(model, tokens)
    assert full.shape == (2, 9, 31) and np.isfinite(np.asarray(full)).all()
    step = jax.jit(lambda m, t, c: m.step(t, c))
    logits, cache = step(model, tokens[:, :8], model.init_cache(2, 9))
    logits2, _ = step(model, tokens[:, 8:], cache)
    np.testing.assert_allclose(jnp.concatenate([logits, logits2], 1), full, rtol=1e-4, atol=1e-5)
    assert count_params(cfg)["total"] == count_leaves(model)


def test_moe_dispatch_modes_agree(hybrid_cfg):
    dense_layers = tuple(
        dataclasses.replace(layer, dispatch="dense") if isinstance(layer, MoEConfig) else layer
        for layer in hybrid_cfg.layers
    )
    sorted_model = HybridLM(hybrid_cfg, rngs=nnx.Rngs(5))
    dense_model = HybridLM(hybrid_cfg.replace(layers=dense_layers), rngs=nnx.Rngs(5))
    tokens = _tokens(hybrid_cfg)
    np.testing.assert_allclose(
        _forward(dense_model, tokens), _forward(sorted_model, tokens), rtol=1e-5, atol=1e-5
    )


def test_bf16_compute_stays_close_to_fp32(hybrid_cfg):
    tokens = _tokens(hybrid_cfg)
    f32 = _forward(HybridLM(hybrid_cfg, rngs=nnx.Rngs(6)), tokens)
    bf16 = _forward(HybridLM(hybrid_cfg.replace(dtype="bfloat16"), rngs=nnx.Rngs(6)), tokens)
    assert bf16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(bf16 - f32))) < 5e-2 * float(jnp.max(jnp.abs(f32)))


def test_bad_pattern_char_gives_one_line_error():
    with pytest.raises(ValueError, match="unknown block"):
        ModelConfig.from_pattern("M?", vocab_size=3, hidden=4, mamba=Mamba2Config(2, 2, 2))
