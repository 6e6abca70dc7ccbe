import json

import pytest

from jaxprune.config import (
    AttentionConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
)
from jaxprune.errors import UserError
from jaxprune.testing.configs import hybrid_config, llama_config


def test_pattern_parsing_builds_one_block_per_char():
    cfg = hybrid_config()
    assert cfg.pattern == "M-*EM-"
    assert [type(layer) for layer in cfg.layers] == [
        Mamba2Config,
        MLPConfig,
        AttentionConfig,
        MoEConfig,
        Mamba2Config,
        MLPConfig,
    ]


def test_megatron_separators_are_ignored():
    cfg = ModelConfig.from_pattern(
        "M-|M*",
        vocab_size=7,
        hidden=8,
        mamba=Mamba2Config(2, 4, 4),
        mlp=MLPConfig(4),
        attention=AttentionConfig(2, 1, 4),
    )
    assert cfg.pattern == "M-M*"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("MX", "unknown block 'X'"), ("M*", "no AttentionConfig was given")],
)
def test_bad_patterns_raise_clear_errors(pattern, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_pattern(pattern, vocab_size=7, hidden=8, mamba=Mamba2Config(2, 4, 4))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Mamba2Config(num_heads=6, head_dim=4, state=4, n_groups=4),
            "multiple of n_groups",
        ),
        (lambda: AttentionConfig(num_heads=6, num_kv_heads=4, head_dim=4), "num_kv_heads"),
        (lambda: MoEConfig(num_experts=4, top_k=5, intermediate=3), "top_k=5"),
        (lambda: MoEConfig(num_experts=6, top_k=2, intermediate=3, n_group=4), "n_group"),
        (lambda: MLPConfig(intermediate=0), "positive int"),
        (lambda: MLPConfig(intermediate=4, activation="gelu"), "activation"),
    ],
)
def test_invalid_block_configs_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("make", [hybrid_config, llama_config])
def test_dict_round_trip_through_json(make):
    cfg = make(tie_embeddings=True)
    text = json.dumps(cfg.to_dict())
    assert ModelConfig.from_dict(json.loads(text)) == cfg


def test_heterogeneous_layers_are_allowed():
    layers = (Mamba2Config(4, 3, 5, 2), Mamba2Config(2, 7, 5, 2), MLPConfig(9), MLPConfig(3))
    cfg = ModelConfig(vocab_size=11, hidden=6, layers=layers)
    assert cfg.pattern == "MM--"
    assert cfg.layers[0] != cfg.layers[1]


def test_ssd_impl_round_trips_and_old_configs_default_to_auto():
    mamba = Mamba2Config(2, 4, 4, ssd_impl="pallas")
    cfg = ModelConfig.from_pattern("M-", vocab_size=7, hidden=8, mamba=mamba, mlp=MLPConfig(4))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["layers"][0]["ssd_impl"] == "pallas"
    back = ModelConfig.from_dict(d)
    assert back == cfg
    assert back.layers[0].ssd_impl == "pallas"
    del d["layers"][0]["ssd_impl"]  # a config written before the field existed
    old = ModelConfig.from_dict(d)
    assert old.layers[0].ssd_impl == "auto"
    assert old != cfg
    assert old.architecture_dict() == cfg.architecture_dict()
    assert "ssd_impl" not in cfg.architecture_dict()["layers"][0]


def test_unknown_ssd_impl_is_a_user_error():
    d = hybrid_config().to_dict()
    d["layers"][0]["ssd_impl"] = "cuda"
    with pytest.raises(UserError, match=r"ssd_impl='cuda'"):
        ModelConfig.from_dict(d)
