"""DMC attention blocks in the model: with every decision an append the model is the plain
one (with the repurposed q/k dimension zeroed); with learned-looking (mixed) decisions the
parallel form equals prefill + token-by-token decoding with the per-head compressed cache."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.config import DMCConfig, ModelConfig
from jaxprune.dmc.retrofit import dmc_blocks, retrofit, with_dmc
from jaxprune.errors import UserError
from jaxprune.nn.cache import DMCCache
from jaxprune.nn.model import init_model
from jaxprune.nn.state import model_from_params, model_params
from jaxprune.testing.configs import hybrid_config, llama_config

TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 50, (2, 12)), jnp.int32)


def _mixed(cfg: ModelConfig, seed=0):
    """A DMC model whose decisions mix appends and merges: c = 0, and the q/k weights of
    the decision dimension scaled up so that k[D-1] takes both signs."""
    model = init_model(with_dmc(cfg, DMCConfig(init_val=0.0)), seed)
    params = dict(model_params(model))
    for i in dmc_blocks(model.config):
        key = f"blocks.{i}.mixer.k_proj"
        w = np.array(params[key])
        w[..., -1] *= 40.0
        params[key] = w
    return model_from_params(model.config, params)


@pytest.mark.parametrize("make", [llama_config, hybrid_config], ids=["llama", "hybrid"])
def test_all_appends_equal_plain_attention_with_the_dimension_zeroed(make):
    cfg = make()
    dmc = retrofit(init_model(cfg, 0))  # alpha logit = -c: every token appends
    assert dmc_blocks(dmc.config) and not dmc_blocks(cfg)
    plain = model_from_params(cfg, dict(model_params(dmc)))
    np.testing.assert_allclose(
        np.asarray(dmc(TOKENS % cfg.vocab_size)),
        np.asarray(plain(TOKENS % cfg.vocab_size)),
        atol=1e-6,
    )


@pytest.mark.parametrize("make", [llama_config, hybrid_config], ids=["llama", "hybrid"])
def test_parallel_form_equals_prefill_then_token_by_token_decode(make):
    cfg = make()
    model = _mixed(cfg)
    tokens = TOKENS % cfg.vocab_size
    full = np.asarray(model(tokens))
    t0 = 5
    cache = model.init_cache(2, tokens.shape[1])
    logits, cache = model.step(tokens[:, :t0], cache)
    steps = [np.asarray(logits)]
    for i in range(t0, tokens.shape[1]):
        logits, cache = model.step(tokens[:, i : i + 1], cache)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-5)
    lengths = [np.asarray(c.length) for c in cache.layers if isinstance(c, DMCCache)]
    assert lengths and all(x.min() > 0 and x.max() < tokens.shape[1] for x in lengths)
    assert len({int(v) for x in lengths for v in x.ravel()}) > 1  # heads compress differently


def test_left_padded_rows_decode_as_they_would_alone():
    model = _mixed(llama_config(), seed=1)
    a, b = [1, 2, 3, 4, 5, 6], [7, 8, 9]
    cache = model.init_cache(2, 10, offset=jnp.asarray([0, 3]))
    batch = jnp.asarray([a, [0, 0, 0, *b]], jnp.int32)
    logits, cache = model.step(batch, cache)
    alone_cache = model.init_cache(1, 10)
    alone, alone_cache = model.step(jnp.asarray([b], jnp.int32), alone_cache)
    np.testing.assert_allclose(np.asarray(logits[1, 3:]), np.asarray(alone[0]), atol=2e-5)
    nxt = jnp.asarray([[11], [11]], jnp.int32)
    np.testing.assert_allclose(
        np.asarray(model.step(nxt, cache)[0][1]),
        np.asarray(model.step(nxt[:1], alone_cache)[0][0]),
        atol=2e-5,
    )


def test_config_round_trips_and_plain_configs_do_not_change():
    cfg = with_dmc(llama_config(), DMCConfig(init_val=3.0))
    again = ModelConfig.from_dict(cfg.to_dict())
    i = dmc_blocks(cfg)[0]
    assert again == cfg and again.layers[i].dmc == DMCConfig(init_val=3.0)
    plain = llama_config().to_dict()
    assert all("dmc" not in layer for layer in plain["layers"])  # old digests hold


def test_dmc_with_a_sliding_window_is_refused():
    cfg = llama_config()
    attn = next(x for x in cfg.layers if x.kind == "attention")
    with pytest.raises(UserError, match="sliding"):
        dataclasses.replace(attn, sliding_window=4, dmc=DMCConfig())


def test_retrofit_refuses_non_attention_blocks():
    with pytest.raises(UserError, match="not attention blocks"):
        with_dmc(hybrid_config(), DMCConfig(), blocks=[0])


def test_relaxed_decisions_are_random_and_hard_ones_are_not():
    from jaxprune.nn.dmc import Relaxation

    model = _mixed(llama_config())
    a = model.hidden_states(TOKENS, relax=Relaxation(jax.random.key(0), 1.0))[0]
    b = model.hidden_states(TOKENS, relax=Relaxation(jax.random.key(1), 1.0))[0]
    assert not np.allclose(np.asarray(a), np.asarray(b))
    h0, h1 = model.hidden_states(TOKENS)[0], model.hidden_states(TOKENS)[0]
    np.testing.assert_array_equal(np.asarray(h0), np.asarray(h1))


def test_a_fitted_cache_decodes_exactly_with_fewer_slots():
    model = _mixed(llama_config(), seed=2)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 53, (2, 24)), jnp.int32)
    full = np.asarray(model(tokens))
    t0 = 16
    cache = model.init_cache(2, 64)
    logits, cache = model.step(tokens[:, :t0], cache)
    cache = cache.fit_dmc(tokens.shape[1] - t0, multiple=1)
    sizes = [c.k.shape[1] for c in cache.layers if isinstance(c, DMCCache)]
    assert sizes and max(sizes) < t0 + (tokens.shape[1] - t0)  # smaller than plain needs
    steps = [np.asarray(logits)]
    for i in range(t0, tokens.shape[1]):
        logits, cache = model.step(tokens[:, i : i + 1], cache)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-5)
