import argparse
import json
import sys

import numpy as np
import pytest

from jaxprune.cli import EXIT_NONFINITE
from jaxprune.cli.gin import train_config_from_gin
from jaxprune.cli.train import add_parsers
from jaxprune.converters.api import load_model
from jaxprune.converters.native import read_meta, save_model
from jaxprune.nn.model import init_model
from jaxprune.testing.train import VOCAB, small_config
from jaxprune.train import trainer

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
GIN_FILES = sorted((ROOT / "experiments" / "configs").glob("*.gin"))


def main(argv: list[str]) -> int:
    """What ``jaxprune.cli.main`` does once ``add_parsers`` is registered."""
    p = argparse.ArgumentParser(prog="jaxprune")
    add_parsers(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError) as e:
        print(f"jaxprune: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    teacher, student = root / "teacher", root / "student"
    for path, cfg, seed in ((teacher, small_config(32, "M-*-"), 1), (student, small_config(), 0)):
        path.mkdir()
        save_model(path, init_model(cfg, seed), family="nemotron_h", hf_config={"x": seed})
    (student / "tokenizer.json").write_text("{}")
    # a learnable stream: a repeated random phrase of 37 tokens
    phrase = np.random.default_rng(0).integers(0, VOCAB, 37)
    np.save(root / "train.npy", np.tile(phrase, 60).astype(np.int32))
    np.save(root / "eval.npy", np.tile(phrase, 8).astype(np.int32))
    return root


COMMON = ["--batch-size", "4", "--seq-len", "16", "--mesh", "1,1,1", "--no-progress", "--json"]


@pytest.mark.slow
def test_distill_cli_writes_a_model_with_metadata_and_eval(models, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "distill", "--teacher", str(models / "teacher"), "--student", str(models / "student"),
        "--data", str(models / "train.npy"), "--eval-data", str(models / "eval.npy"),
        "--steps", "12", "--out", str(out), "--lr", "3e-3", "--save-every", "5",
        "--gin_param", "OptimConfig.warmup_steps = 2",
        "--gin_param", "TrainConfig.eval_batches = 2", "--gin_param", "TrainConfig.keep = 2",
        *COMMON,
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 12 and summary["eval"]["kl"] >= 0 and summary["eval"]["ppl"] > 1
    cfg, meta = read_meta(out)
    assert (
        cfg == small_config() and meta["family"] == "nemotron_h" and meta["hf_config"] == {"x": 0}
    )
    assert (out / "tokenizer.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["10", "12"]  # keep 2
    load_model(out)  # OUT is a model
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"train", "eval"}
    assert rows[0]["loss"] > rows[-2]["loss"]  # the student moves towards the teacher
    # a second run into the same OUT needs --resume; with it, nothing is left to do
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0


@pytest.mark.slow
def test_train_from_a_preset_config_learns_the_data(models, tmp_path, capsys):
    cfg_file = tmp_path / "model.json"
    cfg_file.write_text(json.dumps(small_config(16, "*-").to_dict()))
    out = tmp_path / "out"
    argv = [
        "train", "--init", str(cfg_file), "--data", str(models / "train.npy"),
        "--eval-data", str(models / "eval.npy"), "--steps", "30", "--out", str(out),
        "--lr", "1e-2", "--eval-every", "15", *COMMON,
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    evals = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [15, 30]
    assert evals[-1]["loss"] < 0.5 * np.log(VOCAB), evals  # the repeated phrase is learned
    assert "kl" not in summary["eval"]
    model, _ = load_model(out)
    assert model.config == small_config(16, "*-")


def test_cli_errors_are_one_line(models, tmp_path, capsys):
    base = ["--data", str(models / "train.npy"), "--steps", "2", "--out", str(tmp_path / "o")]
    assert main(["train", *base]) == 2
    assert "exactly one of MODEL or --init" in capsys.readouterr().err
    assert main(["train", "--init", "no-such-preset", *base]) == 2
    assert "neither a config JSON file nor a preset" in capsys.readouterr().err
    assert main(["train", "--init", "tiny-hybrid", *base, "--gin_param", "Nope.x = 1"]) == 2
    assert "gin config" in capsys.readouterr().err


@pytest.mark.slow
def test_non_finite_guard_stops_the_run_and_keeps_the_last_good_checkpoint(
    models, tmp_path, capsys, monkeypatch
):
    """Steps 4.. see a NaN loss mask: they are skipped, and after 2 in a row the run stops."""
    original = trainer._device_batch
    calls = {"n": 0}

    def poisoned(host, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 4:
            host = {**host, "loss_mask": np.full_like(host["loss_mask"], np.nan)}
        return original(host, *a, **kw)

    monkeypatch.setattr(trainer, "_device_batch", poisoned)
    out = tmp_path / "out"
    argv = [
        "train", "--init", "tiny-llama", "--data", str(models / "train.npy"), "--steps", "20",
        "--out", str(out), "--save-every", "1", "--gin_param", "TrainConfig.max_bad_steps = 2",
        *COMMON,
    ]  # fmt: skip
    assert main(argv) == EXIT_NONFINITE
    msg = capsys.readouterr().out
    assert "2 consecutive steps had a non-finite" in msg and "checkpoint is step 3" in msg
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 3 and not (out / "jaxprune.json").exists()
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows if r["step"] > 3] == [1, 1]


@pytest.mark.parametrize("path", GIN_FILES, ids=[p.name for p in GIN_FILES])
def test_every_shipped_gin_config_builds(path):
    cfg = train_config_from_gin([str(path)], [])
    assert cfg.steps >= 1 and cfg.optim.lr > 0


def test_gin_binds_nested_configs():
    cfg = train_config_from_gin(
        [],
        [
            "TrainConfig.loss = @LossConfig()",
            "LossConfig.kl = 'topk'",
            "LossConfig.top_k = 8",
            "TrainConfig.optim = @OptimConfig()",
            "OptimConfig.schedule = 'wsd'",
        ],
    )
    assert cfg.loss.kl == "topk" and cfg.loss.top_k == 8 and cfg.optim.schedule == "wsd"
