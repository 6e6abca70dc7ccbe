"""The pod plan at tiny shapes: the compiled step's per-device argument bytes are the sharded
shares of the configs' parameters, optimizer state and teacher, the extrapolated totals are
consistent with the probes, and tokens/s follows from the stated FLOPs and MFU."""

from __future__ import annotations

import json

import pytest

from experiments import scale_plan
from experiments.scale_model import H100_BF16_TFLOPS, flops_per_token
from jaxprune.counts import count_params

MESH = (1, 4, 2)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    argv = ["--tiny", "--mesh", ",".join(map(str, MESH)), "--remat", "none", "--out", str(out)]
    scale_plan.main(argv)
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


@pytest.mark.slow
def test_per_device_bytes_are_the_sharded_shares(plan):
    res, _ = plan
    teacher, student = scale_plan.tiny_pair()
    lay = res["layouts"][0]
    assert lay["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2} and lay["micro_batch"] == 4
    v = lay["variants"]["no_remat"]
    n_dev = 8
    for probe in v["probes"].values():
        exp, mem = probe["args_expected"], probe["memory"]
        # what XLA allocates for the arguments is what the shardings say, per device
        assert mem["arguments"] == pytest.approx(exp["total"], rel=0.02)
        # fp32 masters / AdamW (mu, nu) / a bf16 teacher, divided over (nearly) all devices
        assert exp["opt_state_total"] == pytest.approx(2 * exp["student_params_total"], rel=0.01)
        for part in ("student_params", "opt_state", "teacher"):
            share = exp[f"{part}_total"] / n_dev
            assert share <= exp[part] <= 1.25 * share, part
        assert mem["peak"] == mem["arguments"] + mem["outputs"] - mem["aliased"] + mem["temp"]
    full = v["full_args_expected"]
    assert full["student_params_total"] == 4 * count_params(student)["total"]
    assert full["teacher_total"] == pytest.approx(2 * count_params(teacher)["total"], rel=0.02)
    assert v["full"]["arguments"] == pytest.approx(full["total"], rel=0.02)


@pytest.mark.slow
def test_extrapolation_and_throughput_are_consistent(plan):
    res, md = plan
    teacher, student = scale_plan.tiny_pair()
    v = res["layouts"][0]["variants"]["no_remat"]
    probes = v["probes"]
    assert [p["pattern"] for p in probes.values()] == ["M-*", "M-M-*", "M-**"]
    assert probes["pair"]["memory"]["arguments"] > probes["base"]["memory"]["arguments"]
    assert v["full"]["arguments"] > probes["pair"]["memory"]["arguments"]  # 3 pairs > 2
    fpt = flops_per_token(teacher, student, res["seq_len"])["train_no_remat"]
    assert v["tokens_per_s"] == pytest.approx(8 * H100_BF16_TFLOPS * 1e12 * res["mfu"] / fpt)
    assert fpt > 6 * count_params(student)["total"] * 0.5  # same order as 6N + 2N'
    assert "data 1 x fsdp 4 x tensor 2 | no_remat |" in md
