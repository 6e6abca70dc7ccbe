"""Sliding-window attention through the model: the full forward equals a numpy forward, and
prefill + token-by-token decoding equals the full forward when the sequence (and the
prompt) is longer than the window, with and without left padding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, RopeConfig
from jaxprune.nn.model import init_model
from jaxprune.testing.estimators import flat_params, forward

W, T = 3, 13
ATTN = AttentionConfig(
    num_heads=4, num_kv_heads=2, head_dim=6, rope=RopeConfig(theta=100.0), sliding_window=W
)
CONFIGS = {
    "mistral": ModelConfig.from_pattern(
        "*-*-",
        vocab_size=43,
        hidden=16,
        attention=ATTN,
        mlp=MLPConfig(intermediate=20, activation="swiglu"),
        initializer_range=0.3,
    ),
    "hybrid": ModelConfig.from_pattern(
        "M*-*",
        vocab_size=43,
        hidden=16,
        mamba=Mamba2Config(num_heads=4, head_dim=4, state=4, n_groups=2, chunk_size=4),
        attention=ATTN,
        mlp=MLPConfig(intermediate=20),
        initializer_range=0.3,
    ),
}
TOKENS = np.asarray(jax.random.randint(jax.random.key(4), (2, T), 0, 43))


_FORWARD = jax.jit(lambda m, t: m(t))
_STEP = jax.jit(lambda m, t, c: m.step(t, c))


def _full(model, tokens):
    return np.asarray(_FORWARD(model, jnp.asarray(tokens)))


def _decode(model, tokens, prefill: int, max_len: int, offset=None):
    step = _STEP
    cache = model.init_cache(tokens.shape[0], max_len, offset=offset)
    logits, cache = step(model, jnp.asarray(tokens[:, :prefill]), cache)
    out = [logits]
    for t in range(prefill, tokens.shape[1]):
        logits, cache = step(model, jnp.asarray(tokens[:, t : t + 1]), cache)
        out.append(logits)
    return np.asarray(jnp.concatenate(out, 1))


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    return init_model(CONFIGS[request.param], 2)


def test_windowed_forward_equals_numpy_and_differs_from_full_attention(model):
    full = _full(model, TOKENS)
    want, _ = forward(model.config, flat_params(model), TOKENS)
    np.testing.assert_allclose(full, want, rtol=1e-4, atol=1e-4)
    layers = tuple(
        dataclasses.replace(x, sliding_window=None) if isinstance(x, AttentionConfig) else x
        for x in model.config.layers
    )
    unwindowed, _ = forward(model.config.replace(layers=layers), flat_params(model), TOKENS)
    assert np.abs(unwindowed[:, W:] - want[:, W:]).max() > 1e-3


@pytest.mark.parametrize("prefill", [1, 7])  # shorter than, and longer than, the window
def test_prefill_then_decode_equals_the_full_forward(model, prefill):
    np.testing.assert_allclose(
        _decode(model, TOKENS, prefill, max_len=16), _full(model, TOKENS), rtol=1e-4, atol=1e-4
    )


def test_left_padded_windowed_decode_equals_each_row_alone(model):
    pad = np.array([0, 4])  # row 1 has 4 padding slots before its 9 real tokens
    batch = TOKENS.copy()
    batch[1, :4] = 0
    batch[1, 4:] = TOKENS[1, : T - 4]
    got = _decode(model, batch, prefill=6, max_len=16, offset=jnp.asarray(pad))
    np.testing.assert_allclose(got[0], _full(model, TOKENS[:1])[0], rtol=1e-4, atol=1e-4)
    alone = _full(model, TOKENS[1:, : T - 4])[0]
    np.testing.assert_allclose(got[1, 4:], alone, rtol=1e-4, atol=1e-4)
