"""The distillation learning-rate sweep (issue 16, item 12) end to end on a tiny teacher:
one cached run per (lr, steps, seed), the learning rate reaches the optimizer, the best
learning rate is the lowest recorded loss, and a rerun recomputes nothing."""

from __future__ import annotations

import json
import math

from jaxprune.study.lr_sweep import best_lr, recommend_lr
from jaxprune.testing.study import tiny_study_inputs
from tests.experiments import load_script


def _main():
    return load_script("lr_sweep").main


def test_best_lr_is_the_lowest_mean_at_that_length():
    rows = [
        {"lr": 1e-3, "steps": 10, "loss": [2.0, 2.2]},
        {"lr": 3e-3, "steps": 10, "loss": [2.05, 2.05]},
        {"lr": 1e-3, "steps": 50, "loss": [1.0]},
        {"lr": 3e-3, "steps": 50, "loss": [1.5]},
    ]
    assert best_lr(rows, 10) == 3e-3  # mean 2.05 < 2.10
    assert best_lr(rows, 50) == 1e-3
    # the smallest learning rate within tol of the best
    assert recommend_lr(rows, 10, tol=0.01) == 3e-3  # 1e-3 is 0.05 worse
    assert recommend_lr(rows, 10, tol=0.06) == 1e-3
    assert recommend_lr(rows, 50, tol=1.0) == 1e-3


def test_lr_sweep_end_to_end_and_cached(tmp_path, capsys, monkeypatch):
    teacher, data = tiny_study_inputs(tmp_path)
    out = tmp_path / "out"
    args = ["--size", "tiny", "--teacher", str(teacher), "--data", str(data), "--out", str(out)]
    args += ["--lrs", "1e-4,3e-2", "--steps", "3", "--seeds", "1"]
    main = _main()
    assert main(args) == 0
    res = json.loads((out / "lr_sweep.json").read_text())
    rows = res["rows"]
    assert [(r["lr"], r["steps"]) for r in rows] == [(1e-4, 3), (3e-2, 3)]
    assert all(len(r["loss"]) == 1 and r["loss"][0] > 0 for r in rows)
    # the learning rate reaches the optimizer: 300x the step moves the student elsewhere
    assert abs(rows[0]["loss"][0] - rows[1]["loss"][0]) > 1e-4
    # 3 steps at 1e-4 barely move the pruned student off its zero-shot loss
    assert abs(rows[0]["loss"][0] - res["student"]["zero_shot_loss"]) < 0.05
    assert res["best"] == {"3": min(rows, key=lambda r: r["loss"][0])["lr"]}
    assert res["recommended"]["lr"] == recommend_lr(rows, 3)
    for r in rows:
        assert math.isclose(r["ppl_ratio"], math.exp(r["mean"] - res["teacher"]["loss"]))
    md = (out / "LR_SWEEP.md").read_text()
    assert "| 0.0001 |" in md and "**best**" in md and "3 steps" in md and "Recommended" in md
    assert res["computed_this_run"]

    capsys.readouterr()
    assert main(args) == 0
    again = json.loads((out / "lr_sweep.json").read_text())
    assert again["computed_this_run"] == [] and again["rows"] == rows
    assert main([*args[:-6], "--lrs", "0", "--steps", "3"]) == 2
    assert "need --seeds >= 1" in capsys.readouterr().err

    # another optimizer schedule is another run: never served from the cache
    import jaxprune.study.runs as runs
    from jaxprune.train.config import OptimConfig

    monkeypatch.setattr(runs, "small_optim", lambda lr: OptimConfig(lr=lr, warmup_fraction=0.5))
    assert main([*args[:-2], "--seeds", "1", "--lrs", "1e-4"]) == 0
    redone = json.loads((out / "lr_sweep.json").read_text())["computed_this_run"]
    assert [c.split("/")[0] for c in redone] == ["distill"], redone
