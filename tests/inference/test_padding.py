"""Left-padded batches of prompts of different lengths behave like each prompt alone."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.config import Mamba2Config
from jaxprune.inference import Decoder, generate, left_pad, make_generate
from jaxprune.nn import HybridLM
from jaxprune.testing.configs import hybrid_config, llama_config

LENGTHS = (7, 2, 11)


def _biased_hybrid():
    """Proj and conv biases make padded positions non-zero unless they are masked."""
    cfg = hybrid_config()
    layers = tuple(
        dataclasses.replace(c, proj_bias=True) if isinstance(c, Mamba2Config) else c
        for c in cfg.layers
    )
    return cfg.replace(layers=layers)


CONFIGS = {"hybrid": _biased_hybrid, "llama": llama_config}


def _prompts(cfg, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(LENGTHS))
    return [
        np.asarray(jax.random.randint(k, (n,), 1, cfg.vocab_size)).tolist()
        for k, n in zip(keys, LENGTHS)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_left_padded_batch_generates_what_each_prompt_generates_alone(name):
    cfg = CONFIGS[name]()
    model = HybridLM(cfg, rngs=nnx.Rngs(0))
    prompts = _prompts(cfg)
    tokens, offset = left_pad(prompts, pad_id=3, multiple=8)
    assert tokens.shape == (3, 16) and offset.tolist() == [9, 14, 5]
    batched = np.asarray(generate(model, tokens, 6, offset=offset))
    for i, p in enumerate(prompts):
        alone = np.asarray(generate(model, jnp.asarray([p]), 6))[0]
        np.testing.assert_array_equal(batched[i], alone, err_msg=f"row {i}")


@pytest.mark.parametrize("name", CONFIGS)
def test_padded_prefill_logits_and_states_equal_unpadded_ones(name):
    cfg = CONFIGS[name]()
    model = HybridLM(cfg, rngs=nnx.Rngs(1))
    prompts = _prompts(cfg, seed=1)
    step = jax.jit(lambda m, t, c: m.step(t, c))
    outs = []
    for pad_id in (0, 5):  # the pad token's value must not matter
        tokens, offset = left_pad(prompts, pad_id=pad_id)
        logits, cache = step(model, tokens, model.init_cache(3, 16, offset=offset))
        outs.append(logits)
        for i, p in enumerate(prompts):
            ref, ref_cache = step(model, jnp.asarray([p]), model.init_cache(1, 16))
            np.testing.assert_allclose(
                logits[i, offset[i] :], ref[0], rtol=1e-4, atol=1e-5, err_msg=f"row {i}"
            )
            for c, r in zip(cache.layers, ref_cache.layers):
                if c is not None and hasattr(c, "ssm"):
                    np.testing.assert_allclose(c.ssm[i], r.ssm[0], rtol=1e-4, atol=1e-6)
                    np.testing.assert_allclose(c.conv[i], r.conv[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outs[0][0, offset[0] :], outs[1][0, offset[0] :])


def test_padded_positions_change_the_output_without_the_offset():
    """The check above can fail: without ``offset`` the padding leaks into the rows."""
    cfg = _biased_hybrid()
    model = HybridLM(cfg, rngs=nnx.Rngs(2))
    prompts = _prompts(cfg, seed=2)
    tokens, offset = left_pad(prompts, pad_id=3)
    fn = make_generate(model, 4)
    state, key = nnx.state(model), jax.random.key(0)
    ref, _ = jax.jit(lambda m, t, c: m.step(t, c))(
        model, jnp.asarray([prompts[1]]), model.init_cache(1, 16)
    )
    unmasked, _ = jax.jit(lambda m, t, c: m.step(t, c))(model, tokens, model.init_cache(3, 16))
    assert not np.allclose(unmasked[1, -1], ref[0, -1], atol=1e-3)
    assert fn(state, tokens, key, offset).shape == (3, 4)


def test_streaming_decoder_matches_the_scan_and_reuses_its_compilation():
    cfg = hybrid_config()
    model = HybridLM(cfg, rngs=nnx.Rngs(3))
    prompts = _prompts(cfg, seed=3)
    tokens, offset = left_pad(prompts, pad_id=0, multiple=4)
    dec = Decoder(model)
    streamed = np.stack(list(dec.stream(tokens, 5, offset=offset, max_len=24)), 1)
    np.testing.assert_array_equal(streamed, generate(model, tokens, 5, offset=offset))
    before = dec.step._cache_size()
    again = np.stack(list(dec.stream(tokens[:, 4:], 5, offset=offset - 4, max_len=24)), 1)
    np.testing.assert_array_equal(again, streamed)
    assert dec.step._cache_size() == before
