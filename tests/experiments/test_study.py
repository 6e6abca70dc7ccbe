"""The ablation study (issue 12): the reproduced rule, equal-parameter matching, the run
cache, the held-out split, and the ``--quick --zero-shot-only`` path end to end on a tiny
teacher, including that a rerun does no new work."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from jaxprune.config import Mamba2Config
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.study.cache import RunCache
from jaxprune.study.config import TINY
from jaxprune.study.data import Split, check_disjoint
from jaxprune.study.stats import match_value, mean_std, reproduced
from jaxprune.testing.study import tiny_study_inputs
from tests.experiments import load_script


def _script():
    return load_script("study")


def test_reproduced_rule_needs_a_gap_over_twice_the_larger_std():
    assert reproduced([1.0, 1.1, 0.9], [2.0, 2.1, 1.9])  # gap 1.0 > 2 * 0.1
    assert not reproduced([1.0, 1.1, 0.9], [1.15, 1.25, 1.05])  # gap 0.15 < 0.2
    assert not reproduced([2.0, 2.1, 1.9], [1.0, 1.1, 0.9])  # wrong direction
    # the larger std decides: gap 0.5, stds 0.0 and 0.3 -> 0.5 < 0.6
    assert not reproduced([1.0, 1.0, 1.0], [1.2, 1.5, 1.8])
    assert reproduced([1.0, 1.0, 1.0], [1.4, 1.5, 1.6])


def test_reproduced_rule_with_one_value_or_none():
    assert mean_std([3.0]) == (3.0, 0.0)
    assert reproduced([1.0], [1.0001])  # n = 1: std 0, a strictly lower mean suffices
    assert not reproduced([1.0], [1.0])  # a tie is not a win
    assert not reproduced([1.0], [0.9])
    assert not reproduced([], [1.0]) and not reproduced([1.0], [])


def test_match_value_finds_the_closest_count_within_tolerance():
    cfg = TINY.teacher()
    mamba = next(x for x in cfg.layers if isinstance(x, Mamba2Config))

    def count(dim: int) -> int:
        layers = tuple(
            dataclasses.replace(x, head_dim=dim) if isinstance(x, Mamba2Config) else x
            for x in cfg.layers
        )
        return count_params(cfg.replace(layers=layers))["total"]

    ref = count(5) + 3
    value, got = match_value(count, range(1, mamba.head_dim), ref)
    assert value == 5 and got == count(5)
    assert abs(got - ref) / ref <= 0.02
    with pytest.raises(UserError, match="from"):
        match_value(count, [1], count(mamba.head_dim), tol=0.001)


def test_run_cache_reuses_finished_runs_and_redoes_unfinished_ones(tmp_path):
    cache, calls = RunCache(tmp_path), []

    def compute(d: Path) -> dict:
        calls.append(d)
        return {"x": len(calls)}

    assert cache.get("k", {"a": 1}, compute) == {"x": 1}
    assert cache.get("k", {"a": 1}, compute) == {"x": 1} and len(calls) == 1
    assert cache.get("k", {"a": 2}, compute) == {"x": 2}  # other inputs: another run
    (cache.dir("k", {"a": 1}) / "result.json").unlink()  # an interrupted run
    assert cache.get("k", {"a": 1}, compute) == {"x": 3}
    log = (tmp_path / "work.log").read_text().split("\n")
    assert [line.split()[1] for line in log if line] == [
        "computed",
        "cached",
        "computed",
        "computed",
    ]


def test_calibration_never_reads_the_held_out_part():
    split = Split(np.arange(1000, dtype=np.int32) % 50, 900, "t")
    for seed in range(5):
        starts = split.calib_starts(32, 20, seed)
        assert np.all(starts + 32 <= 900)
        assert split.calib_rows(32, 20, seed).shape == (20, 32)
    assert not np.array_equal(split.calib_starts(32, 20, 0), split.calib_starts(32, 20, 1))
    held = split.held_rows(32, 10)
    assert held.shape == (3, 32) and np.array_equal(held[0], split.tokens[900:932])
    with pytest.raises(AssertionError, match="held-out"):
        check_disjoint(900, 1000, np.array([880]), 32)


def _recomputed(variants: dict, better: str, other: str, key: str) -> bool:
    a, b = variants[better][key], variants[other][key]
    sa = statistics.stdev(a) if len(a) > 1 else 0.0
    sb = statistics.stdev(b) if len(b) > 1 else 0.0
    return statistics.mean(b) - statistics.mean(a) > 2 * max(sa, sb)


def test_quick_zero_shot_study_end_to_end_and_resumes(tmp_path, capsys):
    teacher, data = tiny_study_inputs(tmp_path)
    out = tmp_path / "out"
    args = [
        "--quick",
        "--zero-shot-only",
        "--size",
        "tiny",
        "--teacher",
        str(teacher),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    main = _script().main
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["findings"]) == {"a", "b", "c", "d", "e"}
    assert res["seeds"] == {"zero_shot": [0, 1], "distill": []}
    assert res["computed_this_run"]  # the first run did the work
    keys = {
        "name",
        "targets",
        "params",
        "zero_shot_loss",
        "distilled_loss",
        "decode_tok_s",
        "ranking",
        "mamba_grouping",
    }
    for fid, f in res["findings"].items():
        assert f["id"] == fid and isinstance(f["reproduced"], bool)
        for v in f["variants"]:
            assert keys <= set(v)
            assert len(v["zero_shot_loss"]) == 2 and all(x > 0 for x in v["zero_shot_loss"])
            assert v["distilled_loss"] is None
        if fid != "d":
            by = {v["name"]: v for v in f["variants"]}
            want = all(
                _recomputed(by, f["expected_better"], o, "zero_shot_loss") for o in f["compared_to"]
            )
            assert f["reproduced"] == want and f["basis"] == "zero_shot_loss"
            assert f["reproduced_by"] == {"zero_shot_loss": want, "distilled_loss": None}
    names = lambda fid: [v["name"] for v in res["findings"][fid]["variants"]]  # noqa: E731
    assert [n.split("[")[0] for n in names("a")] == ["heads", "channels", "both"]
    assert [n.split("[")[0] for n in names("b")] == ["aware", "unaware"]
    assert [n.split("[")[0] for n in names("c")] == ["width", "depth"]
    assert names("e") == ["importance", "random"]
    assert res["findings"]["d"]["reproduced"] is False  # not run without distillation
    b = res["findings"]["b"]["variants"]
    assert [v["mamba_grouping"] for v in b] == ["aware", "unaware"]
    assert [v["ranking"] for v in res["findings"]["e"]["variants"]] == ["importance", "random"]
    a = [v["params"] for v in res["findings"]["a"]["variants"]]
    assert max(a) / min(a) - 1 <= 0.02  # equal-parameter variants within 2%
    c = [v["params"] for v in res["findings"]["c"]["variants"]]
    assert max(c) / min(c) - 1 <= 0.02
    md = (out / "STUDY.md").read_text()
    assert "| (a) | heads[" in md and "--zero-shot-only" in md and "Seeds:" in md
    assert all((out / p).is_file() for p in ("plot_a.png", "plot_d.png", "heatmaps.png"))

    log_before = (out / "work.log").read_text()
    capsys.readouterr()
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["computed_this_run"] == []  # nothing recomputed on rerun
    new_lines = (out / "work.log").read_text()[len(log_before) :].split("\n")
    assert new_lines[0] and all(line.split()[1] == "cached" for line in new_lines if line)
    assert again["findings"]["a"]["variants"] == res["findings"]["a"]["variants"]


def test_text_data_split_by_lines_tokenizer_from_training_lines_only(tmp_path):
    from jaxprune.study.data import prepare
    from jaxprune.tokenizer import load_tokenizer

    lines = [f"verse {i}: and the word was {i % 7}\n" for i in range(200)]
    src = tmp_path / "t.txt"
    src.write_text("".join(lines))
    split, tok_dir = prepare(src, tmp_path / "w", vocab_size=300, held_fraction=0.1)
    tok = load_tokenizer(tok_dir)
    held = tok.decode(split.tokens[split.n_train :].tolist())
    assert held == "".join(lines[180:])  # the last 10% of the lines, nothing else
    assert tok.decode(split.tokens[: split.n_train].tolist()) == "".join(lines[:180])
    again, _ = prepare(src, tmp_path / "w", vocab_size=300, held_fraction=0.1)  # cached
    assert np.array_equal(again.tokens, split.tokens) and again.n_train == split.n_train


def test_run_cache_recomputes_a_missing_artifact_and_checks_its_digest(tmp_path):
    cache, calls = RunCache(tmp_path), []

    def compute(d: Path, digest: str = "d1") -> dict:
        calls.append(d)
        (d / "model").mkdir(exist_ok=True)
        return {"digest": digest}

    cache.get("m", {"a": 1}, compute, need=("model",))
    cache.get("m", {"a": 1}, compute, need=("model",))
    assert len(calls) == 1  # artifact present: cached
    (cache.dir("m", {"a": 1}) / "model").rmdir()  # a results-only (committed) cache
    assert cache.get("m", {"a": 1}, compute) == {"digest": "d1"} and len(calls) == 1
    assert cache.get("m", {"a": 1}, compute, need=("model",)) == {"digest": "d1"}
    assert len(calls) == 2  # rebuilt because the caller reads it
    (cache.dir("m", {"a": 1}) / "model").rmdir()
    with pytest.raises(RuntimeError, match="not reproducible"):
        cache.get("m", {"a": 1}, lambda d: compute(d, "d2"), need=("model",))
    log = [line.split()[1] for line in (tmp_path / "work.log").read_text().split("\n") if line]
    assert log == ["computed", "cached", "cached", "recomputed", "differs"]


def test_text_split_rebuilt_from_its_kept_tokenizer_and_digest_checked(tmp_path):
    from jaxprune.study.data import prepare

    src = tmp_path / "t.txt"
    src.write_text("".join(f"and the word {i % 11} was {i}\n" for i in range(300)))
    split, tok_dir = prepare(src, tmp_path / "w", vocab_size=300, held_fraction=0.1)
    keep = {"split.json", "tokenizer.json"}  # what a committed study cache holds
    for f in tok_dir.iterdir():
        if f.name not in keep:
            f.unlink()
    again, again_dir = prepare(src, tmp_path / "w", vocab_size=300, held_fraction=0.1)
    assert again_dir == tok_dir and again.n_train == split.n_train
    assert np.array_equal(again.tokens, split.tokens)
    meta = tok_dir / "split.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "digest": "0" * 16}))
    (tok_dir / "tokens.npy").unlink()
    with pytest.raises(RuntimeError, match="re-tokenized"):
        prepare(src, tmp_path / "w", vocab_size=300, held_fraction=0.1)


def test_results_only_cache_needs_no_teacher_and_retrains_it_identically(tmp_path):
    """A study cache stripped to what is committed (results, scores, split, tokenizer)
    reruns without touching the teacher; a run that needs the weights retrains it, and the
    retrained weights match the first ones bit for bit (their digest is checked)."""
    from jaxprune.study.run import open_study, run_study

    src = tmp_path / "t.txt"
    src.write_text("".join(f"in the beginning {i % 13} was {i % 5} word\n" for i in range(3000)))
    out, cfg = tmp_path / "out", dataclasses.replace(TINY, decode_new=0)
    res = run_study(cfg, out, data=str(src), zero_shot_only=True)
    assert any(r.startswith("teacher/") for r in res["computed_this_run"])
    kept = {"result.json", "scores.npz", "split.json", "work.log"}  # as in .gitignore
    for f in sorted(out.rglob("*"), reverse=True):
        data_tok = f.name == "tokenizer.json" and f.parent.parent.name == "data"
        if f.is_file() and f.name not in kept and not data_tok:
            f.unlink()
        elif f.is_dir() and not any(f.iterdir()):
            f.rmdir()
    assert not list(out.rglob("*.safetensors"))
    again = run_study(cfg, out, data=str(src), zero_shot_only=True)
    assert again["computed_this_run"] == [] and again["findings"] == res["findings"]
    study, _ = open_study(cfg, out, data=str(src))
    assert study._teacher is None  # nothing above loaded it
    study.teacher  # noqa: B018  retrains: the weights are gone
    assert study.cache.computed == [next(r for r in res["computed_this_run"] if "teacher" in r)]
    assert "recomputed teacher" in (out / "work.log").read_text()
