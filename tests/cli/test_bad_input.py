"""Bad input a new user meets gives one error line and exit 2 (never a traceback), and
nothing is written: export to another family, a wrong kind of file, a file for a
directory; and ``search`` says what it does while it works."""

import numpy as np
import pytest

from jaxprune.cli import EXIT_USAGE, main
from jaxprune.converters.native import save_native
from jaxprune.nn.model import init_model
from jaxprune.testing.configs import compress_config, llama_config


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    save_native(root / "nh", init_model(compress_config(), 0), family="nemotron_h")
    save_native(root / "ll", init_model(llama_config(), 0), family="llama")
    np.save(root / "ids.npy", np.random.default_rng(0).integers(1, 50, (16, 17)))
    return root


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxprune: error: "), err
    return err


@pytest.mark.parametrize(
    "src, model_type, says",
    [
        ("nh", "llama", "llama holds (*-)*"),
        ("nh", "qwen3_moe", "block pattern is 'M-*-'"),
        ("nh", "mamba2", "only Mamba2 blocks"),
        ("ll", "nemotron_h", "no RoPE"),
        ("nh", "gpt2", "unsupported model_type 'gpt2'"),
    ],
)
def test_export_as_another_family_is_one_line(native, tmp_path, capsys, src, model_type, says):
    out = tmp_path / "hf"
    assert main(["export", str(native / src), str(out), "--model-type", model_type]) == EXIT_USAGE
    err = _error(capsys)
    assert says in err
    if model_type != "gpt2":
        assert f"cannot export as {model_type}" in err and "omit --model-type" in err
    assert not out.exists()


def test_per_layer_mlp_on_another_family_is_one_line(native, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", str(native / "ll"), str(out), "--per-layer-mlp"]) == EXIT_USAGE
    assert "only be written for nemotron_h" in _error(capsys)
    assert not out.exists()


def test_a_scores_file_that_is_not_npz(native, tmp_path, capsys):
    out = tmp_path / "p"
    args = ["prune", str(native / "nh"), str(out), "--target", "hidden_size=16"]
    assert main([*args, "--scores", str(native / "ids.npy")]) == EXIT_USAGE
    assert "not a scores file" in _error(capsys)
    assert not out.exists()


def test_importance_out_must_be_a_file(native, tmp_path, capsys):
    args = ["importance", str(native / "nh"), "--data", str(native / "ids.npy")]
    assert main([*args, "--out", str(tmp_path)]) == EXIT_USAGE
    assert "is a directory" in _error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_distill_out_that_is_a_file(native, tmp_path, capsys):
    out = tmp_path / "run.txt"
    out.write_text("keep me")
    nh = str(native / "nh")
    args = ["distill", "--teacher", nh, "--student", nh, "--data", str(native / "ids.npy")]
    assert main([*args, "--steps", "1", "--out", str(out)]) == EXIT_USAGE
    assert "is a file" in _error(capsys)
    assert out.read_text() == "keep me"


def test_a_mesh_that_is_not_three_integers(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--init", "tiny-hybrid", "--data", "d", "--out", "o", "--mesh", "1,x,1"])
    assert e.value.code == EXIT_USAGE
    assert "three integer sizes" in capsys.readouterr().err


def test_search_prints_a_line_per_candidate_and_the_chosen_model(native, tmp_path, capsys):
    out = tmp_path / "search"
    args = ["search", str(native / "nh"), "--data", str(native / "ids.npy"), "--out", str(out)]
    opts = ["--params", "0.7", "--divisor", "8", "--top-k", "2", "--samples", "8"]
    assert main([*args, *opts, "--seq-len", "16", "--eval-samples", "4"]) == 0
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if "candidate" in x]
    assert [x.split(":")[0].strip() for x in lines] == ["candidate 1/2", "candidate 2/2"]
    assert "budget 70% of the source" in captured.err
    assert f"chosen model: {out / 'best'}" in captured.out
    assert (out / "best" / "jaxprune.json").is_file()
