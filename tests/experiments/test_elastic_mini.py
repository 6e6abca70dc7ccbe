"""The miniature elastic experiment end to end on the study's tiny teacher: every budget has
its elastic, separate and zero-shot losses, counts near the budgets, and a rerun is cached."""

import json

import pytest

from jaxprune.testing.study import tiny_study_inputs
from tests.experiments import load_script


def _script():
    return load_script("elastic_mini")


@pytest.mark.slow
def test_elastic_mini_end_to_end_and_cached(tmp_path):
    teacher, data = tiny_study_inputs(tmp_path)
    out = tmp_path / "out"
    args = ["--size", "tiny", "--teacher", str(teacher), "--data", str(data), "--out", str(out),
            "--steps", "4"]  # fmt: skip
    assert _script().main(args) == 0
    res = json.loads((out / "elastic_mini.json").read_text())
    assert [round(r["budget"], 2) for r in res["rows"]] == [1.0, 0.75, 0.5]
    for r in res["rows"]:
        assert abs(r["params"] / (r["budget"] * res["teacher"]["params"]) - 1) <= 0.03
        assert r["elastic_loss"] > 0 and r["zero_shot_loss"] > 0
        assert ("separate_loss" in r) == (r["budget"] < 1)
    assert res["rows"][1]["separate_tokens"] == res["elastic"]["tokens"] // 2
    assert (out / "elastic_arch.png").is_file() and "| 75% |" in (out / "ELASTIC.md").read_text()
    assert _script().main(args) == 0
    again = json.loads((out / "elastic_mini.json").read_text())
    assert again["computed_this_run"] == [] and again["rows"] == res["rows"]
