"""``jaxprune info MODEL`` reads every kind of model spec: an HF directory, a native
checkpoint (whose config holds ``Infinity`` dt limits), a config JSON and a preset."""

import dataclasses
import json

import pytest

from jaxprune.cli import main
from jaxprune.converters.api import export
from jaxprune.converters.native import save_native
from jaxprune.counts import count_params
from jaxprune.nn.model import init_model
from jaxprune.presets import get_preset
from jaxprune.testing.configs import compress_config, llama_config


def _info(capsys, *args) -> dict:
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _expected(cfg) -> dict:
    return {"pattern": cfg.pattern, **count_params(cfg)}


def test_info_on_a_native_checkpoint_with_infinite_dt_limits(tmp_path, capsys):
    cfg = compress_config()
    save_native(tmp_path / "native", init_model(cfg, 0), family="nemotron_h")
    assert "Infinity" in (tmp_path / "native" / "jaxprune.json").read_text()
    out = _info(capsys, str(tmp_path / "native"))
    assert {k: out[k] for k in _expected(cfg)} == _expected(cfg)


def _qwen3():
    cfg = llama_config()
    attn = dataclasses.replace(cfg.layers[0], qkv_bias=False)
    return dataclasses.replace(
        cfg, layers=tuple(attn if i % 2 == 0 else x for i, x in enumerate(cfg.layers))
    )


@pytest.mark.parametrize("make, model_type", [(compress_config, "nemotron_h"), (_qwen3, "qwen3")])
def test_info_on_an_hf_directory(tmp_path, capsys, make, model_type):
    cfg = make()
    export(init_model(cfg, 0), tmp_path / "hf", model_type=model_type)
    assert not (tmp_path / "hf" / "jaxprune.json").exists()
    out = _info(capsys, str(tmp_path / "hf"))
    assert {k: out[k] for k in _expected(cfg)} == _expected(cfg)


def test_info_on_a_config_json_given_as_model(tmp_path, capsys):
    cfg = llama_config()
    path = tmp_path / "model.json"
    path.write_text(json.dumps(cfg.to_dict()))
    out = _info(capsys, str(path))
    assert {k: out[k] for k in _expected(cfg)} == _expected(cfg)


def test_info_on_a_preset_by_name_and_by_flag(capsys):
    cfg = get_preset("tiny-llama")
    assert _info(capsys, "tiny-llama")["total"] == count_params(cfg)["total"]
    assert _info(capsys, "--preset", "tiny-llama")["total"] == count_params(cfg)["total"]


def test_info_text_names_the_model_and_every_count(tmp_path, capsys):
    cfg = compress_config()
    save_native(tmp_path / "native", init_model(cfg, 0), family="nemotron_h")
    assert main(["info", str(tmp_path / "native")]) == 0
    text = capsys.readouterr().out
    assert "pattern M-*-" in text
    for k, v in count_params(cfg).items():
        assert f"{v:,}" in text and k in text
