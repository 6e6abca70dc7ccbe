"""The miniature Puzzle experiment end to end on the study's tiny teacher: both methods at
each compression meet the budget, are distilled, and a rerun is cached."""

import json

import pytest

from jaxprune.testing.study import tiny_study_inputs
from tests.experiments import load_script


def _script():
    return load_script("puzzle_mini")


@pytest.mark.slow
def test_puzzle_mini_end_to_end_and_cached(tmp_path, capsys):
    teacher, data = tiny_study_inputs(tmp_path)
    out = tmp_path / "out"
    args = ["--size", "tiny", "--teacher", str(teacher), "--data", str(data), "--out", str(out),
            "--compressions", "0.4", "--bld-steps", "2"]  # fmt: skip
    assert _script().main(args) == 0
    res = json.loads((out / "puzzle_mini.json").read_text())
    assert [(r["compression"], r["kind"]) for r in res["rows"]] == [
        (0.4, "puzzle"), (0.4, "uniform")
    ]  # fmt: skip
    for r in res["rows"]:
        assert r["params"] <= r["budget"] < res["teacher"]["params"]
        assert r["zero_shot_loss"] > 0 and r["distilled_loss"] > 0
        assert r["decode_tok_s"] is None  # the tiny size times no decode
    het = res["rows"][0]
    assert len(het["variants"]) == len(res["teacher"]["pattern"])
    assert sum(het["block_params"]) < sum(het["parent_block_params"])
    assert (out / "puzzle_arch.png").is_file() and "| 40% | puzzle |" in (
        out / "PUZZLE.md"
    ).read_text()
    assert _script().main(args) == 0
    again = json.loads((out / "puzzle_mini.json").read_text())
    assert again["computed_this_run"] == [] and again["rows"] == res["rows"]
    assert _script().main([*args[:-4], "--compressions", "1.5"]) == 2
    assert "--compressions must lie in (0, 1)" in capsys.readouterr().err
