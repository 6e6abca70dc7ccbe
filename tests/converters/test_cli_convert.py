"""The convert / export / eval commands, and bad input: one error line, exit 2, nothing at
OUT, the source untouched. Uses checkpoints written by jaxprune itself (no torch needed)."""

import hashlib
import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from jaxprune.cli import main
from jaxprune.config import AttentionConfig, MLPConfig, ModelConfig, RopeConfig
from jaxprune.converters.api import export, load_model
from jaxprune.nn.model import init_model


def _llama_cfg():
    attn = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=8, rope=RopeConfig(theta=500.0))
    return ModelConfig.from_pattern(
        "*-*-", vocab_size=40, hidden=16, attention=attn, mlp=MLPConfig(24, "swiglu"), norm_eps=1e-6
    )


def _tokenizer(path):
    words = "in the beginning god created heaven and earth . light was good".split()
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


@pytest.fixture
def hf_dir(tmp_path):
    src = tmp_path / "src"
    export(init_model(_llama_cfg(), 0), src, model_type="llama")
    _tokenizer(src / "tokenizer.json")
    return src


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_convert_export_eval_round_trip(hf_dir, tmp_path, capsys):
    assert main(["convert", str(hf_dir), str(tmp_path / "native")]) == 0
    assert (tmp_path / "native" / "tokenizer.json").exists()
    assert main(["export", str(tmp_path / "native"), str(tmp_path / "hf"), "--dtype", "fp32"]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    text = tmp_path / "data.txt"
    text.write_text("in the beginning god created the heaven and the earth .\n" * 20)
    capsys.readouterr()
    results = []
    for model in ("native", "hf"):
        assert (
            main(["eval", str(tmp_path / model), "--data", str(text), "--seq-len", "16", "--json"])
            == 0
        )
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["tokens"] == results[1]["tokens"] > 0
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], abs=1e-6)
    assert results[0]["ppl"] == pytest.approx(np.exp(results[0]["loss"]))


def test_eval_npy_matches_the_model(hf_dir, tmp_path, capsys):
    rows = np.random.default_rng(0).integers(0, 40, size=(3, 9))
    np.save(tmp_path / "rows.npy", rows)
    assert main(["eval", str(hf_dir), "--data", str(tmp_path / "rows.npy"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    model, _ = load_model(hf_dir)
    logits = np.asarray(model(rows[:, :-1]), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, rows[:, 1:, None], -1).mean()
    assert got["tokens"] == 3 * 8
    assert got["loss"] == pytest.approx(want, rel=1e-5)


def _expect_error(args, capsys, match, out=None):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and match in err, err
    if out is not None:
        assert not out.exists()


def test_missing_source(tmp_path, capsys):
    _expect_error(
        ["convert", str(tmp_path / "nope"), str(tmp_path / "out")],
        capsys,
        "not a directory",
        tmp_path / "out",
    )


def test_truncated_safetensors(hf_dir, tmp_path, capsys):
    f = hf_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    before = _digest(hf_dir)
    _expect_error(
        ["convert", str(hf_dir), str(tmp_path / "out")], capsys, "truncated", tmp_path / "out"
    )
    assert _digest(hf_dir) == before


def test_corrupted_header(hf_dir, tmp_path, capsys):
    f = hf_dir / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"\x00garbage!!!!"
    f.write_bytes(bytes(data))
    _expect_error(
        ["convert", str(hf_dir), str(tmp_path / "out")],
        capsys,
        "model.safetensors",
        tmp_path / "out",
    )


def test_config_that_disagrees_with_the_weights(hf_dir, tmp_path, capsys):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["intermediate_size"] = 32
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    before = _digest(hf_dir)
    _expect_error(
        ["convert", str(hf_dir), str(tmp_path / "out")],
        capsys,
        "config.json implies",
        tmp_path / "out",
    )
    assert _digest(hf_dir) == before


def test_unknown_model_type(hf_dir, tmp_path, capsys):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    _expect_error(
        ["convert", str(hf_dir), str(tmp_path / "out")],
        capsys,
        "unsupported model_type 'gpt2'",
        tmp_path / "out",
    )


def test_extra_tensor_is_reported(hf_dir, tmp_path, capsys):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["num_hidden_layers"] = 1
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    _expect_error(
        ["convert", str(hf_dir), str(tmp_path / "out")],
        capsys,
        "not used by the config",
        tmp_path / "out",
    )


def test_output_that_exists_is_not_overwritten(hf_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", str(hf_dir), str(out)]) == 2
    assert "keep.txt" in capsys.readouterr().err or (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_export_needs_a_native_checkpoint(hf_dir, tmp_path, capsys):
    _expect_error(
        ["export", str(hf_dir), str(tmp_path / "out")],
        capsys,
        "not a jaxprune checkpoint",
        tmp_path / "out",
    )


def test_eval_bad_data(hf_dir, tmp_path, capsys):
    _expect_error(
        ["eval", str(hf_dir), "--data", str(tmp_path / "missing.npy")], capsys, "missing.npy"
    )
