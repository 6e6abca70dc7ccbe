"""Two processes on loopback (jax.distributed, gloo CPU collectives), 2 devices each."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprune.converters.api import load_model
from jaxprune.testing.train import distill

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_mesh(tmp_path):
    out = tmp_path / "multi"
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.train.worker",
                str(out),
                "--steps",
                "4",
                "--process-id",
                str(i),
                "--num-processes",
                "2",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--local-devices",
                "2",
            ],  # fmt: skip
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0].decode()[-3000:])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n---\n".join(logs)
    multi = json.loads((out / "result.json").read_text())
    assert multi["status"] == "done" and multi["step"] == 4
    model, _ = load_model(out)  # process 0 wrote the final model
    # one process, the same (data 2, fsdp 2) mesh on 4 of its 8 devices, the same rows
    assert len(jax.devices()) >= 4
    single = distill(str(tmp_path / "single"), steps=4)
    print(f"2-process loss {multi['loss']:.7f}, 1-process loss {single.train['loss']:.7f}")
    np.testing.assert_allclose(multi["loss"], single.train["loss"], rtol=1e-5)
