"""Exact resume: SIGKILL / SIGTERM mid-run, then --resume, equals an uninterrupted run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxprune.converters.api import load_model
from jaxprune.nn.state import model_params
from jaxprune.testing.train import distill, preempt_at

ROOT = Path(__file__).resolve().parents[2]
STEPS = 8


def _params(out: Path) -> dict[str, np.ndarray]:
    model, _ = load_model(out)
    return model_params(model)


def _assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("ref") / "run"
    result = distill(str(out), steps=STEPS)
    assert result.status == "done" and result.step == STEPS
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return _params(out)


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tests.train.worker", str(out), "--steps", str(STEPS)]
    proc = subprocess.Popen(
        [*cmd, "--step-delay", "0.5"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    ckpts = out / "checkpoints"
    deadline = time.time() + 240
    while not (ckpts / "2" / "commit_success.txt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert killed_at < STEPS and not (out / "jaxprune.json").exists()
    result = distill(str(out), steps=STEPS, resume=True)
    assert result.status == "done" and result.step == STEPS
    _assert_bitwise(_params(out), reference)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # no duplicated steps


@pytest.mark.slow
def test_sigterm_saves_and_resume_finishes_identically(tmp_path, reference, monkeypatch):
    out = tmp_path / "run"
    preempt_at(monkeypatch, 3)
    result = distill(str(out), steps=STEPS, save_every=100)
    assert result.status == "preempted" and result.step == 3
    assert (out / "checkpoints" / "3" / "commit_success.txt").exists()
    assert not (out / "jaxprune.json").exists()
    monkeypatch.undo()
    result = distill(str(out), steps=STEPS, save_every=100, resume=True)
    assert result.status == "done" and result.step == STEPS
    _assert_bitwise(_params(out), reference)


@pytest.mark.slow
def test_resume_with_more_steps_extends_a_finished_run(tmp_path, capsys):
    from jaxprune.errors import UserError
    from jaxprune.train import OptimConfig

    const = OptimConfig(lr=3e-3, warmup_steps=0, schedule="constant")
    straight = distill(str(tmp_path / "straight"), steps=6, optim=const)
    out = tmp_path / "run"
    assert distill(str(out), steps=4, optim=const).step == 4
    capsys.readouterr()
    extended = distill(str(out), steps=6, optim=const, resume=True)
    assert extended.status == "done" and extended.step == straight.step == 6
    assert "extending the run from 4 to 6 steps" in capsys.readouterr().err
    # Same data order and, with a constant schedule, the same updates: 4 + 2 == 6.
    _assert_bitwise(_params(out), _params(tmp_path / "straight"))
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    with pytest.raises(UserError, match="N > 6"):
        distill(str(out), steps=5, optim=const, resume=True)
