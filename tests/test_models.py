"""The one model resolver: every kind of spec, and every bad spec as a one-line UserError."""

import json

import numpy as np
import pytest

from jaxprune.config import AttentionConfig, MLPConfig, ModelConfig, RopeConfig
from jaxprune.converters.api import export
from jaxprune.converters.hf_config import encode_json
from jaxprune.converters.native import model_params, save_model
from jaxprune.errors import UserError
from jaxprune.models import LoadedModel, resolve_config, resolve_model
from jaxprune.nn.model import init_model
from jaxprune.presets import get_preset
from jaxprune.testing.configs import hybrid_config
from jaxprune.testing.tokenizers import write_tokenizer

WORDS = ["[UNK]", "<|endoftext|>", "</s>", "<eot>", "the", "cat"]


def _same_params(a, b) -> bool:
    pa, pb = model_params(a), model_params(b)
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "native-ckpt"
    path.mkdir()
    model = init_model(hybrid_config(), 4)
    save_model(path, model, family="nemotron_h", hf_config={"eos_token_id": 2, "x": 1})
    write_tokenizer(path, WORDS)
    return path, model


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "hf-model"
    attn = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=8, rope=RopeConfig(theta=500.0))
    cfg = ModelConfig.from_pattern(
        "*-*-", vocab_size=40, hidden=16, attention=attn, mlp=MLPConfig(24, "swiglu")
    )
    model = init_model(cfg, 5)
    export(model, path, model_type="llama")
    write_tokenizer(path, WORDS)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 2]}))
    return path, model


def test_native_checkpoint(native):
    path, model = native
    got = resolve_model(path)
    assert isinstance(got, LoadedModel)
    assert got.config == model.config and _same_params(got.model, model)
    assert got.family == "nemotron_h" and got.hf_config == {"eos_token_id": 2, "x": 1}
    assert got.source == path and got.name == "native-ckpt"
    assert got.tokenizer.eos_id == 2  # from the HF config kept in jaxprune.json
    assert resolve_config(str(path)) == model.config
    assert resolve_model(path, with_tokenizer=False).tokenizer is None


def test_hf_directory(hf):
    path, model = hf
    got = resolve_model(str(path))
    assert _same_params(got.model, model)  # the exported weights, read back
    assert got.family == "llama" and got.hf_config["model_type"] == "llama"
    assert got.source == path and got.name == "hf-model"
    assert got.tokenizer.eos_id == 3  # generation_config.json: the first of the list
    assert resolve_config(path) == got.config and got.config.hidden == model.config.hidden


def test_config_json_is_a_random_init(tmp_path, native):
    cfg = hybrid_config()
    assert np.isinf(cfg.layers[0].dt_limit[1])  # the file holds an Infinity
    for name, d in (("bare", cfg.to_dict()), ("encoded", encode_json(cfg.to_dict()))):
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
        assert "Infinity" in (tmp_path / f"{name}.json").read_text()
        assert resolve_config(tmp_path / f"{name}.json") == cfg
    got = resolve_model(str(tmp_path / "bare.json"), seed=3)
    assert got.config == cfg and _same_params(got.model, init_model(cfg, 3))
    assert not _same_params(got.model, native[1])  # the same config from seed 4
    assert (got.tokenizer, got.family, got.hf_config, got.source) == (None, None, None, None)
    assert got.name == "bare"


def test_preset_and_tokenizer_override(tmp_path, native):
    write_tokenizer(tmp_path, WORDS)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 3}))
    got = resolve_model("tiny-hybrid", tokenizer=tmp_path, seed=1)
    assert got.config == get_preset("tiny-hybrid") and got.name == "tiny-hybrid"
    assert got.source is None and got.family is None and got.tokenizer.eos_id == 3
    assert resolve_config("tiny-llama") == get_preset("tiny-llama")
    # the override replaces the model directory's own tokenizer
    assert resolve_model(native[0], tokenizer=tmp_path / "tokenizer.json").tokenizer.eos_id == 3


def _bad_specs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"x")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "jaxprune.json").write_text('{"format": "other"}')
    (tmp_path / "alien").mkdir()
    (tmp_path / "alien" / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "partial.json").write_text('{"vocab_size": 3}')
    return [
        (tmp_path / "missing", "missing: not found"),
        ("no-such-preset", "not found.*neither a config JSON file nor a preset.*unknown preset"),
        (tmp_path / "empty", "neither a jaxprune checkpoint .* nor an HF model directory"),
        (tmp_path / "junk", "neither a jaxprune checkpoint"),
        (tmp_path / "broken", "not a jaxprune checkpoint"),
        (tmp_path / "alien", "unsupported model_type 'gpt2'"),
        (tmp_path / "bad.json", "bad model config"),
        (tmp_path / "list.json", "bad model config.*JSON object"),
        (tmp_path / "partial.json", "bad model config"),
    ]


@pytest.mark.parametrize("fn", [resolve_model, resolve_config])
def test_bad_specs_are_one_line_user_errors(tmp_path, fn):
    for spec, match in _bad_specs(tmp_path):
        with pytest.raises(UserError, match=match) as info:
            fn(spec)
        assert "\n" not in str(info.value), spec
