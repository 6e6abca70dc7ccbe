"""Tied input / output embeddings (``tie_word_embeddings``, as small Llama / Qwen models
have): HF -> native logits, HF -> native -> HF round trip, export of a tied native model."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.torch

import transformers  # noqa: E402

from jaxprune.config import AttentionConfig, MLPConfig, ModelConfig, RopeConfig  # noqa: E402
from jaxprune.converters.api import convert, export, load_hf, load_model  # noqa: E402
from jaxprune.nn.model import init_model  # noqa: E402
from jaxprune.testing.hf_models import (  # noqa: E402
    logits,
    random_model,
    safetensors_dict,
    save,
)

TOKENS = np.random.default_rng(1).integers(0, 61, size=(2, 9))
TIED = ("llama", "qwen2", "qwen3")


def _ours(model, tokens=TOKENS):
    return np.asarray(jax.jit(lambda m, t: m(t))(model, jnp.asarray(tokens)))


_tensors = safetensors_dict


@pytest.fixture(scope="module")
def tied_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tied")
    out = {}
    for f in TIED:
        m = random_model(f, seed=5, tie_word_embeddings=True)
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
        out[f] = save(m, root / f)
    return out


@pytest.mark.parametrize("family", TIED)
def test_tied_model_loads_tied_and_matches_transformers(family, tied_dirs):
    src = tied_dirs[family]
    assert not any("lm_head" in k for k in _tensors(src))  # transformers stores one matrix
    model, _ = load_hf(src)
    assert model.config.tie_embeddings and not hasattr(model, "lm_head")
    hf = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    np.testing.assert_allclose(_ours(model), logits(hf, TOKENS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", TIED)
def test_tied_round_trip_is_bit_exact_and_stays_tied(family, tied_dirs, tmp_path):
    src = tied_dirs[family]
    convert(src, tmp_path / "native")
    native, _ = load_model(tmp_path / "native")
    assert native.config.tie_embeddings
    export(tmp_path / "native", tmp_path / "hf")
    a, b = _tensors(src), _tensors(tmp_path / "hf")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    orig = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    np.testing.assert_array_equal(logits(hf, TOKENS), logits(orig, TOKENS))


def test_native_tied_model_exports_to_a_tied_llama(tmp_path):
    """A tied native model (e.g. after pruning) exports to a tied HF model with its logits."""
    attn = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=6, rope=RopeConfig(theta=1e4))
    cfg = ModelConfig.from_pattern(
        "*-*-",
        vocab_size=61,
        hidden=20,
        attention=attn,
        mlp=MLPConfig(intermediate=28, activation="swiglu"),
        tie_embeddings=True,
        initializer_range=0.2,
    )
    model = init_model(cfg, 4)
    export(model, tmp_path / "hf", model_type="llama")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.tie_word_embeddings
    np.testing.assert_allclose(logits(hf, TOKENS), _ours(model), atol=1e-4, rtol=0)
    back, _ = load_hf(tmp_path / "hf")
    np.testing.assert_array_equal(np.asarray(back.embed[...]), np.asarray(model.embed[...]))


def test_pruned_tied_model_exports_and_transformers_reproduces_it(tied_dirs, tmp_path):
    """Prune hidden + MLP of a tied HF Qwen3: the exported model is still tied, has the
    pruned shapes, and transformers computes jaxprune's logits."""
    from jaxprune.pruning.importance import calibrate, scores
    from jaxprune.pruning.prune import prune

    model, _ = load_hf(tied_dirs["qwen3"])
    sc = scores(calibrate(model, [TOKENS]), model)
    small = prune(model, sc, {"hidden_size": 24, "intermediate_size": 30})
    export(small, tmp_path / "hf", model_type="qwen3")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.tie_word_embeddings and hf.config.hidden_size == 24
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    assert not any("lm_head" in k for k in _tensors(tmp_path / "hf"))
    np.testing.assert_allclose(logits(hf, TOKENS), _ours(small), atol=1e-4, rtol=0)
