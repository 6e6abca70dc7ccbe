"""Reports and plots say what they measured: the eval data (a warning when it is the
training or calibration data), a loss axis not from 0 marked, the Pareto front drawn,
zero-shot vs distilled labels, bench rows named by model with the baseline stated, and no
plot of a single point."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from jaxprune.cli.inference import bench_names  # noqa: E402
from jaxprune.inference.report import to_markdown, write_report  # noqa: E402
from jaxprune.pipeline import report as compress_report  # noqa: E402
from jaxprune.search import report as search_report  # noqa: E402
from jaxprune.search.search import Candidate  # noqa: E402

ROWS = [
    {"model": "teacher", "params": 2_000_000, "active": 2_000_000, "loss": 5.55, "ppl": 257.0,
     "tokens": 120},
    {"model": "pruned", "params": 1_200_000, "active": 1_200_000, "loss": 5.59, "ppl": 268.0,
     "tokens": 120},
    {"model": "distilled", "params": 1_200_000, "active": 1_200_000, "loss": 5.56, "ppl": 260.0,
     "tokens": 120},
]  # fmt: skip


def _summary(training_data: bool) -> dict:
    ev = {"data": "/d/held.npy", "rows": 8, "seq_len": 16, "training_data": training_data}
    return {"targets": {"hidden_size": 24}, "rows": ROWS, "eval": ev, "export": "/o/hf"}


def test_compress_report_names_the_eval_data_and_warns_on_training_data():
    text = "\n".join(compress_report.report_lines(_summary(True)))
    assert "Eval data: `/d/held.npy` (8 rows x 16 tokens)." in text
    assert "Warning: evaluated on the training data" in text
    assert "| distilled | 1,200,000 | 1,200,000 | 5.5600 | 260.00 | 1.012x |" in text
    assert "HF export: /o/hf" in text
    held_out = "\n".join(compress_report.report_lines(_summary(False)))
    assert "Warning" not in held_out and "Eval data: `/d/held.npy`" in held_out


def test_compress_plot_marks_a_loss_axis_that_does_not_start_at_zero():
    fig = compress_report.figure(_summary(True))
    loss_ax, params_ax = fig.axes
    lo, _ = loss_ax.get_ylim()
    assert lo > 5.0 and "axis starts at" in loss_ax.get_ylabel() and "not 0" in loss_ax.get_ylabel()
    assert "WARNING: the training data" in loss_ax.get_title()
    assert "held.npy" in loss_ax.get_title()
    assert params_ax.get_ylim()[0] == 0
    assert [t.get_text() for t in loss_ax.get_xticklabels()] == ["teacher", "pruned", "distilled"]
    plt.close(fig)
    wide = [dict(r, loss=v) for r, v in zip(ROWS, (1.0, 6.0, 3.0), strict=True)]
    fig = compress_report.figure({**_summary(False), "rows": wide})
    assert fig.axes[0].get_ylim()[0] == 0 and "not 0" not in fig.axes[0].get_ylabel()
    plt.close(fig)


def _cands(distilled: bool) -> list[Candidate]:
    specs = [(100, 3.0), (80, 3.2), (90, 3.5), (60, 3.9)]  # (90, 3.5) is dominated
    return [
        Candidate({"hidden_size": p}, p * 1000, p * 1000, p * 10_000, loss=loss,
                  distilled_loss=loss - 0.5 if distilled else None, decode_ms=p / 10)
        for p, loss in specs
    ]  # fmt: skip


def test_search_report_states_the_data_and_the_kind_of_loss(tmp_path):
    cands = _cands(False)
    data = {"data": "calib.npy", "rows": 8, "seq_len": 12, "calibration_data": True}
    search_report.write_report(tmp_path, cands, cands[0], {"total": 10**6, "active": 10**6}, data)
    md = (tmp_path / "report.md").read_text()
    assert "Candidates scored on: `calib.npy` (8 rows x 12 tokens)." in md
    assert "Warning: scored on the calibration data" in md
    assert "Ranked by: LM loss, zero-shot" in md
    assert (tmp_path / "search.png").stat().st_size > 1000
    assert "distilled" in search_report.loss_label(_cands(True))


def test_search_plot_draws_the_pareto_front_on_each_panel():
    cands = _cands(False)
    fig = search_report.figure(cands, cands[0])
    params_ax = fig.axes[0]
    assert "zero-shot" in params_ax.get_ylabel()
    (front,) = [line for line in params_ax.get_lines() if line.get_color() == "tab:red"]
    assert sorted(front.get_xdata().tolist()) == [0.06, 0.08, 0.1]  # (90, 3.5) is dominated
    labels = params_ax.get_legend_handles_labels()[1]
    assert "Pareto front" in labels and "chosen" in labels
    plt.close(fig)


def test_one_candidate_is_a_table_not_a_plot(tmp_path):
    cands = _cands(False)[:1]
    paths = search_report.write_report(tmp_path, cands, cands[0], {"total": 1, "active": 1})
    assert not (tmp_path / "search.png").exists() and tmp_path / "report.md" in paths
    assert "search.png" not in (tmp_path / "report.md").read_text()


def _bench(prompt_lens):
    rows = [
        {"model": m, "prompt_len": t, "batch": 1, "params": 1e6, "decode_tok_s": 10.0,
         "cache_bytes_per_seq": 2**20, "decode_tok_s_ratio": 1.0}
        for m in ("runs/a/hf", "runs/b/hf") for t in prompt_lens
    ]  # fmt: skip
    return {"device": "cpu", "backend": "cpu", "rows": rows}


def test_bench_states_the_baseline_and_names_rows_by_model(tmp_path):
    md = to_markdown(_bench([16, 32]))
    assert "baseline: runs/a/hf (the first model" in md
    assert "| runs/a/hf | 16 |" in md and "| runs/b/hf | 32 |" in md
    assert bench_names(["runs/a/hf", "runs/b/hf", "tiny-llama", "tiny-llama"]) == [
        "runs/a/hf", "runs/b/hf", "tiny-llama", "tiny-llama #2",
    ]  # fmt: skip
    assert str(tmp_path / "bench.png") in write_report(_bench([16, 32]), tmp_path)


@pytest.mark.parametrize("prompt_lens", [[16]])
def test_bench_with_one_prompt_length_is_a_table_not_a_plot(tmp_path, prompt_lens):
    (tmp_path / "bench.png").write_bytes(b"stale")
    written = write_report(_bench(prompt_lens), tmp_path)
    assert any("one prompt length: no plot" in w for w in written)
    assert not (tmp_path / "bench.png").exists() and (tmp_path / "bench.md").is_file()


def test_compress_knows_when_it_evaluates_on_the_training_data(tmp_path):
    import numpy as np

    from jaxprune.pipeline.compress import CompressConfig, _eval_data

    rows = np.zeros((8, 16), np.int32)
    base = {"model": "tiny-llama", "data": str(tmp_path / "a.npy"), "out": str(tmp_path / "o")}
    cfg = CompressConfig(**base, targets={"hidden_size": 32})
    assert _eval_data(cfg, rows) == {
        "data": base["data"], "rows": 8, "seq_len": 16, "training_data": True,
    }  # fmt: skip
    same = CompressConfig(**base, targets={"hidden_size": 32}, eval_data=base["data"])
    assert _eval_data(same, rows)["training_data"] is True
    other = CompressConfig(**base, targets={"hidden_size": 32}, eval_data=str(tmp_path / "b"))
    assert _eval_data(other, rows)["training_data"] is False
