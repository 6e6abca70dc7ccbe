"""``jaxprune elastic`` / ``extract`` end to end on a tiny native parent and token ids,
including a run killed with SIGKILL and resumed bitwise."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.converters.native import load_native, save_model
from jaxprune.counts import count_params
from jaxprune.nn.model import init_model
from jaxprune.testing.configs import compress_config


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("elastic_cli")
    save_model(root / "parent", init_model(compress_config(), 0))
    ids = np.random.default_rng(0).integers(0, 50, 8000).astype(np.int32)
    np.save(root / "data.npy", ids)
    return root


def _args(root, out, *extra):
    return [
        "elastic", str(root / "parent"), "--data", str(root / "data.npy"), "--out", str(out),
        "--steps", "6", "--batch-size", "4", "--seq-len", "16", "--calib-samples", "8",
        "--no-progress", "--mesh=1,1,1", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_elastic_then_extract_each_budget(inputs, tmp_path, capsys):
    out = tmp_path / "el"
    assert main(_args(inputs, out, "--budgets", "1.0,0.6", "--json")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 6 and len(summary["children"]) == 2
    full = count_params(compress_config())["total"]
    for b in (1.0, 0.6):
        child_dir = tmp_path / f"child{b}"
        assert main(["extract", str(out), str(child_dir), "--budget", str(b)]) == 0
        n = count_params(load_native(child_dir)[0].config)["total"]
        assert abs(n / (b * full) - 1) <= 0.03
    assert main(["extract", str(out), str(tmp_path / "x"), "--budget", "0.75"]) == 2
    assert "not trained" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # one checkpoint serves every budget: eval / generate / bench slice at load time
    data = str(inputs / "data.npy")
    evals = {}
    for spec, extra in ((str(out), ["--budget", "0.6"]), (str(tmp_path / "child0.6"), [])):
        assert main(["eval", spec, "--data", data, "--seq-len", "16", "--json", *extra]) == 0
        evals[spec] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]
    assert len(set(evals.values())) == 1
    assert main(["generate", str(out), "--budget", "0.6", "--prompt-ids", "1,2,3",
                 "--max-new-tokens", "3", "--json"]) == 0  # fmt: skip
    gen = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(gen[0]["completion_ids"]) == 3
    bench = ["bench", str(out), "--budget", "1.0,0.6", "--prompt-len", "8", "--gen-len", "2",
             "--batch", "1", "--repeats", "1", "--json"]  # fmt: skip
    assert main(bench) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {r["model"] for r in rows["rows"]} == {f"{out} @ 1", f"{out} @ 0.6"}


@pytest.mark.parametrize(
    "budgets, message",
    [
        ("1.0,1.5", "fraction above 1"),
        ("0.75,0.5", "include the full budget"),
        ("1.0,0.001", "smallest child"),
        ("1.0,0.5,0.5", "repeated"),
    ],
)
def test_bad_budgets_fail_with_one_line_and_nothing_written(
    inputs, tmp_path, capsys, budgets, message
):
    out = tmp_path / "el"
    assert main(_args(inputs, out, "--budgets", budgets)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_memory_budgets(inputs, tmp_path, capsys):
    from jaxprune.search.space import memory_bytes

    parent = memory_bytes(compress_config(), batch=1, context=64)["total"] / 1e9
    out = tmp_path / "el"
    extra = ["--memory-context", "64", "--json"]
    assert main(_args(inputs, out, "--memory-gb", f"{parent:.9f},0.000001", *extra)) == 2
    assert "smallest child" in capsys.readouterr().err  # 1 KB cannot hold any child
    assert main(_args(inputs, out, "--memory-gb", f"{parent * 0.9:.9f}", *extra)) == 2
    assert "include the full model" in capsys.readouterr().err
    assert (
        main(_args(inputs, out, "--memory-gb", f"{2 * parent:.9f},{0.7 * parent:.9f}", *extra)) == 0
    )
    kids = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["children"]
    assert abs(kids[1]["cost"] / (0.7 * parent * 1e9) - 1) <= 0.03
    child = load_native(_extract(out, tmp_path, kids[1]["budget"]))[0]
    assert kids[1]["cost"] == memory_bytes(child.config, batch=1, context=64)["total"]


def _extract(out, tmp_path, budget):
    child = tmp_path / f"child{budget}"
    assert main(["extract", str(out), str(child), "--budget", str(budget)]) == 0
    return child


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise(inputs, tmp_path):
    from jaxprune.nn.state import model_params

    args = lambda out: _args(inputs, out, "--budgets", "1.0,0.6", "--save-every", "2")  # noqa: E731
    ref = tmp_path / "ref"
    assert main(args(ref)) == 0
    out = tmp_path / "killed"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.elastic.worker", "0.5", *args(out)],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 240
    while not (out / "checkpoints" / "2" / "commit_success.txt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "elastic.json").exists()
    assert main([*args(out), "--resume"]) == 0
    a, b = load_native(out)[0], load_native(ref)[0]
    pa, pb = model_params(a), model_params(b)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    ra, rb = np.load(out / "router.npz"), np.load(ref / "router.npz")
    for k in rb.files:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
    ca = json.loads((out / "elastic.json").read_text())["children"]
    assert ca == json.loads((ref / "elastic.json").read_text())["children"]


@pytest.mark.slow
def test_stage2_trains_on_longer_sequences(inputs, tmp_path, capsys):
    out = tmp_path / "el"
    assert main(_args(inputs, out, "--budgets", "1.0,0.6", "--stage2-seq-len", "32")) == 2
    assert "needs --stage2-from" in capsys.readouterr().err
    stage2 = ["--stage2-from", "4", "--stage2-seq-len", "32"]
    stage2 += ["--gin_param", "TrainConfig.log_every = 1"]
    assert main(_args(inputs, out, "--budgets", "1.0,0.6", *stage2)) == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["seq_len"] for r in train] == [16] * 4 + [32] * 2
