"""The GPU check's dry run end to end on the CPU: every section runs (or is skipped with
its reason where it needs a GPU), the checks that ran on the CPU pass, and the JSON and the
Markdown report agree."""

from __future__ import annotations

import json

import pytest

from experiments import gpu_check


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    gpu_check.main(["--dry-run", "--out", str(out)])
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_every_unit_ran_or_says_why_not(dry_run):
    res, _ = dry_run
    units = res["units"]
    assert set(units) == set(gpu_check.UNITS)
    gpu_only = {u for u, (_, _, g) in gpu_check.UNITS.items() if g}
    for name, u in units.items():
        if name in gpu_only:
            assert u["status"] == "skipped" and "GPU only" in u["reason"], name
        else:
            assert u["status"] == "ok", (name, u.get("traceback"))
    assert res["meta"]["dry_run"] is True and res["meta"]["isolated"] is False


def test_ssd_values_and_gradients_pass_on_cpu(dry_run):
    rows = dry_run[0]["units"]["ssd_check"]["result"]["rows"]
    impls = {r["impl"] for r in rows}
    assert {"reference-vs-sequential", "pallas"} <= impls
    assert len({r["shape"] for r in rows}) == 2
    for r in rows:
        assert r["passed"], r
        assert 0.0 <= r["worst_rel_err"] <= r["tolerance"]
        if r["impl"] != "reference-vs-sequential":  # y, final state and every gradient
            assert {"y", "final", "x", "dt", "A", "B", "C"} <= set(r["rel_err"])


def test_timings_are_positive_and_interleaved(dry_run):
    units = dry_run[0]["units"]
    rows = units["ssd_timing"]["result"]["rows"]
    assert {(r["impl"], r["pass"]) for r in rows} >= {("reference", "fwd"), ("reference", "fwdbwd")}
    assert all(r["ms"] > 0 and r["best_ms"] <= r["ms"] for r in rows)
    att = units["attention"]["result"]
    assert {r["impl"] for r in att["rows"]} == {"reference", "blockwise"}  # cuDNN: GPU only
    assert att["skipped_impls"] == ["cudnn: GPU only"]
    assert all(c["passed"] for c in att["checks"])


def test_kd_step_reports_memory_and_throughput(dry_run):
    for name in ("kd_step/bench-10m", "kd_step/nemotron-h-1b"):
        r = dry_run[0]["units"][name]["result"]
        assert r["loss_finite"] and r["tokens_per_s"] > 0
        mem = r["compiled_memory"]
        assert mem["peak"] >= mem["temp"] > 0 and mem["arguments"] > 0
        assert r["peak_bytes_in_use"] is None  # measured only on a GPU


def test_markdown_names_every_unit_and_the_pallas_verdict(dry_run):
    res, md = dry_run
    assert res["pallas"]["passed"] is False  # never verified without a GPU
    assert "PALLAS SSD: NOT VERIFIED" in md
    for name, u in res["units"].items():
        assert f"| {name} | {u['status']} |" in md
    assert "## ssd_check" in md and "reference-vs-sequential" in md


def test_unknown_skip_is_refused():
    with pytest.raises(SystemExit):
        gpu_check.parse(["--skip", "nonsense"])
