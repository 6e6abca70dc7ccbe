"""Multi-process start-up (``jaxprune.distributed``) and the CLI's ``--coordinator`` /
``--num-processes`` / ``--process-id`` options: where the values come from, what is refused,
and two CLI processes on loopback training like one process on the same four devices."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.distributed import DistributedConfig, initialize, resolve
from jaxprune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_requested_is_a_single_process_run():
    cfg = resolve(DistributedConfig(), env={})
    assert not cfg.requested
    assert initialize(DistributedConfig(), env={}) == (0, 1)


def test_values_come_from_flags_then_the_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "h0:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert resolve(DistributedConfig(), env) == DistributedConfig("h0:1234", 4, 3, True)
    got = resolve(DistributedConfig("h1:99", 2, 1), env)
    assert (got.coordinator, got.num_processes, got.process_id) == ("h1:99", 2, 1)
    # --distributed alone: JAX's cluster detection fills in the rest
    assert resolve(DistributedConfig(auto=True), {}) == DistributedConfig(None, None, None, True)


@pytest.mark.parametrize(
    "cfg,env,message",
    [
        (DistributedConfig(num_processes=2), {}, "give both"),
        (DistributedConfig("h:1", 2, 2), {}, r"not in \[0, 2\)"),
        (DistributedConfig(None, 2, 0), {}, "need a coordinator"),
        (DistributedConfig("h0", 2, 0), {}, "HOST:PORT"),
        (DistributedConfig(), {"JAX_NUM_PROCESSES": "x", "JAX_PROCESS_ID": "0"}, "integer"),
    ],
)
def test_incomplete_or_wrong_values_are_refused(cfg, env, message):
    with pytest.raises(UserError, match=message):
        resolve(cfg, env)


def test_the_cli_refuses_them_in_one_line(capsys, monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--num-processes", "2", "info", "tiny-hybrid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxprune: error: distributed: give both") and "\n" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out: Path, data: Path, devices: int, dist: list[str]) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, "-m", "jaxprune", *dist, "train", "--init", "tiny-hybrid",
           "--data", str(data), "--steps", "3", "--batch-size", "8", "--seq-len", "16",
           "--mesh=-1,2,1", "--out", str(out), "--json", "--no-progress"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    got = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        got.append((p.returncode, o.decode(), e.decode()))
    return got


@pytest.mark.slow
def test_two_cli_processes_train_like_one_process_on_four_devices(tmp_path):
    data = tmp_path / "ids.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (64, 17)).astype(np.int32))
    port = _free_port()
    coord = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id"]
    multi = [_train(tmp_path / "multi", data, 2, [*coord, str(i)]) for i in range(2)]
    single = _finish([_train(tmp_path / "single", data, 4, [])])[0]
    results = _finish(multi)
    for rc, _, err in [single, *results]:
        assert rc == 0, err[-3000:]
    assert "distributed: process 0 of 2, 4 devices (2 local)" in results[0][2]
    assert "distributed: process 1 of 2, 4 devices (2 local)" in results[1][2]
    loss_one = json.loads(single[1].strip().splitlines()[-1])["loss"]
    for _, out, _ in results:
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["step"] == 3
        # the same rows and steps; gloo's reduction order differs from one process's, which
        # Adam's first steps amplify to ~4e-5 (other rows would move the loss by ~1e-2)
        np.testing.assert_allclose(summary["loss"], loss_one, rtol=2e-4)
    # process 0 wrote the model; its weights are the one-process run's, up to the few
    # elements whose tiny gradients Adam's sign-like first steps turn into +-lr updates
    from flax import nnx

    from jaxprune.converters.api import load_model

    a, b = (nnx.state(load_model(tmp_path / d)[0], nnx.Param) for d in ("multi", "single"))
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    diff = np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel() for x, y in pairs])
    same = np.mean(diff <= 1e-4)
    assert diff.max() <= 3 * 2e-3 and same > 0.98, (diff.max(), same)
