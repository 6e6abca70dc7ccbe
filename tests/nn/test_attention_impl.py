"""AttentionConfig.attn_impl: the models' logits and generated tokens do not depend on it
(blockwise with small blocks, so that every call spans several blocks and the last one is
partial), and it round-trips through configs and native checkpoints and stays out of HF
exports."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.config import AttentionConfig, ModelConfig
from jaxprune.converters.api import export
from jaxprune.converters.native import read_meta, save_native
from jaxprune.errors import UserError
from jaxprune.inference.generate import generate
from jaxprune.nn.model import init_model
from jaxprune.ops import blockwise_attention
from jaxprune.testing.configs import hybrid_config, llama_config


def _with(cfg: ModelConfig, **changes) -> ModelConfig:
    layers = tuple(
        dataclasses.replace(x, **changes) if isinstance(x, AttentionConfig) else x
        for x in cfg.layers
    )
    return cfg.replace(layers=layers)


CONFIGS = {
    "hybrid": hybrid_config(initializer_range=0.3),
    "llama": llama_config(initializer_range=0.3),
    "llama-window": _with(llama_config(initializer_range=0.3), sliding_window=5),
}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(blockwise_attention, "BLOCK_Q", 4)
    monkeypatch.setattr(blockwise_attention, "BLOCK_K", 8)


def _models(name):
    return [init_model(_with(CONFIGS[name], attn_impl=i), 0) for i in ("reference", "blockwise")]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_logits_do_not_depend_on_attn_impl(name):
    ref, blk = _models(name)
    tokens = jax.random.randint(jax.random.key(1), (2, 21), 0, CONFIGS[name].vocab_size)
    seq_idx = jnp.asarray([[0] * 21, [0] * 9 + [1] * 12], jnp.int32)
    fwd = jax.jit(lambda m, t, s: m(t, seq_idx=s))
    for s in (None, seq_idx):
        np.testing.assert_allclose(fwd(blk, tokens, s), fwd(ref, tokens, s), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_generated_tokens_do_not_depend_on_attn_impl(name):
    """Prefill of 11 (left padding 0 and 3) then 9 decode steps over a 20-slot cache."""
    ref, blk = _models(name)
    prompt = jax.random.randint(jax.random.key(2), (2, 11), 0, CONFIGS[name].vocab_size)
    offset = jnp.asarray([0, 3], jnp.int32)
    got = generate(blk, prompt, 9, offset=offset)
    want = generate(ref, prompt, 9, offset=offset)
    np.testing.assert_array_equal(got, want)


def test_decode_step_logits_match_over_a_partly_filled_cache():
    ref, blk = _models("llama-window")
    tokens = jax.random.randint(jax.random.key(3), (2, 14), 0, CONFIGS["llama"].vocab_size)
    step = jax.jit(lambda m, t, c: m.step(t, c))
    out = {}
    for name, m in (("ref", ref), ("blk", blk)):
        cache = m.init_cache(2, 30, offset=jnp.asarray([2, 0], jnp.int32))
        first, cache = step(m, tokens[:, :7], cache)  # chunked prefill: 7 + 5, then 2 steps
        second, cache = step(m, tokens[:, 7:12], cache)
        rest = [step(m, tokens[:, i : i + 1], cache)[0] for i in (12,)]
        out[name] = [first, second, *rest]
    for a, b in zip(out["blk"], out["ref"], strict=True):
        np.testing.assert_allclose(a[:, -3:], b[:, -3:], atol=1e-5, rtol=1e-5)


def test_attn_impl_round_trips_and_is_an_implementation_field():
    cfg = _with(llama_config(), attn_impl="blockwise")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["layers"][0]["attn_impl"] == "blockwise"
    assert ModelConfig.from_dict(d) == cfg
    del d["layers"][0]["attn_impl"]  # a config written before the field existed
    assert ModelConfig.from_dict(d).layers[0].attn_impl == "auto"
    assert "attn_impl" not in cfg.architecture_dict()["layers"][0]
    assert cfg.architecture_dict() == llama_config().architecture_dict()
    with pytest.raises(UserError, match=r"attn_impl='flash'"):
        AttentionConfig(num_heads=2, num_kv_heads=1, head_dim=4, attn_impl="flash")


def test_native_checkpoint_keeps_attn_impl_and_hf_export_drops_it(tmp_path):
    cfg = _with(llama_config(), attn_impl="blockwise", qkv_bias=False)
    model = init_model(cfg, 0)
    save_native(tmp_path / "native", model)
    assert read_meta(tmp_path / "native")[0] == cfg
    export(model, tmp_path / "hf", model_type="qwen3")
    text = (tmp_path / "hf" / "config.json").read_text()
    assert "attn_impl" not in text and "blockwise" not in text
    assert json.loads(text)["model_type"] == "qwen3"
