"""``jaxprune dmc`` end to end on a tiny native model and token ids: the retrofit writes a
DMC checkpoint that ``eval`` (with ``kv_compression``), ``generate`` and ``bench`` run with
the compressed cache; bad input gets one line and writes nothing."""

import json

import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.config import MLPConfig, ModelConfig
from jaxprune.converters.native import load_native, save_model
from jaxprune.dmc.retrofit import dmc_blocks
from jaxprune.nn.model import init_model
from jaxprune.testing.configs import MAMBA, llama_config


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dmc_cli")
    save_model(root / "model", init_model(llama_config(), 0))
    ids = np.random.default_rng(0).integers(0, 53, 6000).astype(np.int32)
    np.save(root / "data.npy", ids)
    return root


def _args(root, out, *extra):
    return [
        "dmc", str(root / "model"), "--data", str(root / "data.npy"), "--out", str(out),
        "--steps", "8", "--batch-size", "4", "--seq-len", "16", "--no-progress",
        "--mesh=1,1,1", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_dmc_then_eval_generate_and_bench_use_the_compressed_cache(inputs, tmp_path, capsys):
    out = tmp_path / "dmc"
    binds = ["--gin_param", "DMCTrainConfig.init_val = 0.5", "--lr", "0.03"]
    assert main(_args(inputs, out, "--target-ratio", "2", "--dmc-weight", "10", *binds,
                      "--json")) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 8 and summary["dmc_target"] == pytest.approx(2.0)
    model = load_native(out)[0]
    assert dmc_blocks(model.config) == (0, 2)
    assert model.config.layers[0].dmc.init_val == 0.5
    data = str(inputs / "data.npy")
    assert main(["eval", str(out), "--data", data, "--seq-len", "16", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    kv = ev["kv_compression"]
    assert kv["ratio"] > 1.0 and sorted(kv["blocks"]) == ["0", "2"]
    assert all(len(b["heads"]) == 2 for b in kv["blocks"].values())
    assert main(["eval", str(inputs / "model"), "--data", data, "--seq-len", "16", "--json"]) == 0
    assert "kv_compression" not in capsys.readouterr().out  # a plain model has none
    gen = ["generate", str(out), "--prompt-ids", "1,2,3,4,5,6,7,8", "--max-new-tokens", "6"]
    assert main(gen) == 0
    err = capsys.readouterr().err
    assert "DMC KV cache:" in err and "block 0:" in err and "block 2:" in err
    bench = ["bench", str(out), str(inputs / "model"), "--prompt-len", "16", "--gen-len", "4",
             "--batch", "2", "--repeats", "1", "--json"]  # fmt: skip
    assert main(bench) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    dmc_row, plain_row = rows
    assert dmc_row["kv_compression"]["ratio"] >= 1.0 and plain_row["kv_compression"] is None
    used = dmc_row["kv_used_bytes_per_seq"]
    assert 0 < used <= plain_row["kv_bytes_per_seq"]


def test_bad_input_is_one_line_and_writes_nothing(inputs, tmp_path, capsys):
    mamba_only = ModelConfig.from_pattern("M-", vocab_size=53, hidden=12, mamba=MAMBA,
                                          mlp=MLPConfig(16))  # fmt: skip
    save_model(tmp_path / "mamba", init_model(mamba_only, 0))
    cases = [
        (_args(inputs, tmp_path / "a", "--blocks", "1"), "not attention blocks"),
        (_args(inputs, tmp_path / "b", "--loss", "lm", "--teacher", str(inputs / "model")),
         "--teacher needs --loss kd"),
        (_args(inputs, tmp_path / "c", "--target-ratio", "0.5"), "target ratio must be >= 1"),
        ([*_args(inputs, tmp_path / "d")[:1], str(tmp_path / "mamba"),
          *_args(inputs, tmp_path / "d")[2:]], "no attention block"),
    ]  # fmt: skip
    for args, msg in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / args[args.index("--out") + 1]).exists()
