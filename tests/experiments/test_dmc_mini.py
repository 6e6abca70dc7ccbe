"""The miniature DMC experiment end to end at the tiny size: every (model, method, ratio)
row is measured, GQA really shrinks the cache r times, a rerun is cached."""

import json

import pytest

from jaxprune.testing.study import tiny_study_inputs
from tests.experiments import load_script


def _script():
    return load_script("dmc_mini")


@pytest.mark.slow
def test_dmc_mini_end_to_end_and_cached(tmp_path, capsys):
    _, data = tiny_study_inputs(tmp_path)
    out = tmp_path / "out"
    args = ["--size", "tiny", "--data", str(data), "--out", str(out)]
    assert _script().main(args) == 0
    res = json.loads((out / "dmc_mini.json").read_text())
    got = [(r["kind"], r["method"], r["ratio"]) for r in res["rows"]]
    each = (("plain", 1), ("dmc", 2), ("gqa", 2), ("dmc", 4), ("gqa", 4))
    assert got == [(k, m, r) for k in ("llama", "hybrid") for m, r in each]
    for kind in ("llama", "hybrid"):
        rows = {(r["method"], r["ratio"]): r for r in res["rows"] if r["kind"] == kind}
        plain = rows[("plain", 1)]
        for r in (2, 4):
            assert rows[("gqa", r)]["kv_bytes_per_seq"] * r == plain["kv_bytes_per_seq"]
            dmc = rows[("dmc", r)]
            assert dmc["kv_compression"]["ratio"] >= 1.0 and dmc["loss_before"] > 0
            assert dmc["kv_bytes_per_seq"] <= plain["kv_bytes_per_seq"]
            assert 0 < dmc["kv_used_bytes_per_seq"] <= dmc["kv_bytes_per_seq"]
    text = (out / "DMC.md").read_text()
    assert "| llama | dmc | 2 |" in text and (out / "dmc_heads.png").is_file()
    assert _script().main(args) == 0
    assert json.loads((out / "dmc_mini.json").read_text())["computed_this_run"] == []
    assert _script().main([*args, "--kinds", "gpt"]) == 2
    assert "--kinds takes llama" in capsys.readouterr().err
