"""compress: a stage is reused only while what it depends on is unchanged; bad input is
refused before anything is written."""

import dataclasses
import json

import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.converters.api import export, load_model
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.pipeline import CompressConfig, run_compress
from jaxprune.pipeline.cache import StageCache
from jaxprune.pruning.scoring import ScoreConfig
from jaxprune.search.run import SearchConfig
from jaxprune.testing.configs import compress_config
from jaxprune.testing.train import tiny_train_config

TARGETS = {"hidden_size": 24, "intermediate_size": 32, "mamba_num_heads": 2}
TRAIN = tiny_train_config()


@pytest.fixture
def tiny(tmp_path) -> CompressConfig:
    export(init_model(compress_config(), 0), tmp_path / "src", model_type="nemotron_h")
    np.save(tmp_path / "data.npy", np.random.default_rng(0).integers(1, 50, size=(64, 17)))
    return CompressConfig(
        model=str(tmp_path / "src"),
        data=str(tmp_path / "data.npy"),
        out=str(tmp_path / "out"),
        targets=TARGETS,
        calibration=ScoreConfig(samples=16, seq_len=16),
        eval_rows=8,
        distill=TRAIN,
    )


def _run(cfg: CompressConfig) -> tuple[dict, list[str]]:
    lines: list[str] = []
    return run_compress(cfg, log=lines.append), lines


def _ran(lines: list[str]) -> list[str]:
    """The stages a run computed, by their log lines."""
    return [line for line in lines if line.startswith("stage: ")]


# -- validation: nothing is written ---------------------------------------------------


def test_a_typod_target_fails_with_one_line_and_writes_nothing(tiny, tmp_path, capsys):
    cfg = dataclasses.replace(tiny, targets={"hiden_size": 24})
    with pytest.raises(
        UserError, match=r"unknown target 'hiden_size' \(did you mean 'hidden_size'"
    ):
        run_compress(cfg)
    assert not (tmp_path / "out").exists()
    gin = tmp_path / "run.gin"
    gin.write_text(
        f'CompressConfig.model = "{tiny.model}"\nCompressConfig.data = "{tiny.data}"\n'
        f'CompressConfig.out = "{tiny.out}"\nCompressConfig.targets = {{"hiden_size": 24}}\n'
    )
    assert main(["compress", str(gin)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hiden_size" in err[0] and "hidden_size" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"targets": {"hidden_size": 999}}, "larger than the source"),
        ({"targets": {"hidden_size": "24"}}, "is not an integer"),
        ({"targets": {"drop_layers": [7]}}, "layer 7 does not exist"),
        ({"targets": {}, "search": SearchConfig(params=0.01, divisor=8)}, "no candidate can fit"),
        ({"model": "/no/such/model"}, "not found"),
        ({"distill": dataclasses.replace(TRAIN, batch_size=128)}, "1,088 tokens, too few"),
    ],
)
def test_bad_input_is_refused_before_out_is_created(tiny, tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        run_compress(dataclasses.replace(tiny, **change))
    assert not (tmp_path / "out").exists()


def test_short_calibration_data_is_called_calibration_data(tiny, tmp_path):
    np.save(tmp_path / "flat.npy", np.arange(1, 101) % 49 + 1)  # 100 tokens, one stream
    cfg = dataclasses.replace(
        tiny, data=str(tmp_path / "flat.npy"), calibration=ScoreConfig(samples=4, seq_len=500)
    )
    with pytest.raises(UserError, match=r"^compress: calibration data: .*100 tokens.*500"):
        run_compress(cfg)
    assert not (tmp_path / "out").exists()


def test_the_budget_check_names_the_smallest_candidate_and_the_limiting_options(tiny):
    cfg = dataclasses.replace(tiny, targets={}, search=SearchConfig(params=0.01, divisor=8))
    with pytest.raises(UserError) as e:
        run_compress(cfg)
    msg = str(e.value)
    assert "hidden_size=16" in msg and "divisor=8" in msg and "max_prune=0.5" in msg


# -- the cache ------------------------------------------------------------------------


def test_stage_cache_reuses_recomputes_downstream_and_names_the_change(tmp_path):
    outputs = {"a": ("a.txt",), "b": ("b.txt",), "c": ("c.txt",)}

    def go(inputs: dict) -> list[str]:
        lines: list[str] = []
        cache = StageCache(tmp_path, outputs, lines.append)
        for name in outputs:
            _, action = cache.enter(name, name, inputs[name])
            if action == "run":
                (tmp_path / f"{name}.txt").write_text(json.dumps(inputs[name]))
                cache.finish(name)
        return lines

    base = {"a": {"x": 1}, "b": {"y": 1}, "c": {"z": 1}}
    assert go(base) == ["stage: a", "stage: b", "stage: c"]
    assert go(base) == ["cached: a", "cached: b", "cached: c"]
    lines = go({**base, "b": {"y": 2}})
    assert lines == [
        "cached: a",
        "stage: b (recomputed: y changed)",
        "stage: c (recomputed: b was recomputed)",
    ]
    assert json.loads((tmp_path / "b.txt").read_text()) == {"y": 2}
    (tmp_path / "c.txt").unlink()
    assert go({**base, "b": {"y": 2}})[-1] == "stage: c (recomputed: its output is missing)"
    (tmp_path / "stages.json").write_text("{not json")
    assert go(base) == ["stage: a", "stage: b", "stage: c"]


def test_an_unfinished_stage_is_not_taken_as_done(tmp_path):
    outputs = {"a": ("a.txt",), "b": ("b.txt",)}
    cache = StageCache(tmp_path, outputs, lambda _: None)
    cache.enter("a", "a", {"x": 1})
    (tmp_path / "a.txt").write_text("half")  # crashed before finish
    lines: list[str] = []
    cache = StageCache(tmp_path, outputs, lines.append)
    _, action = cache.enter("a", "a", {"x": 1})
    assert action == "run" and not (tmp_path / "a.txt").exists()
    assert lines == ["stage: a (recomputed: the previous run did not finish it)"]
    _, action = StageCache(tmp_path, outputs, print).enter("a", "a", {"x": 1}, resumable=True)
    assert action == "resume"


@pytest.mark.slow
def test_a_rerun_recomputes_exactly_the_stages_whose_inputs_changed(tiny, tmp_path):
    out = tmp_path / "out"
    _, lines = _run(tiny)
    assert len(_ran(lines)) == 6
    _, lines = _run(tiny)
    assert _ran(lines) == []  # unchanged: nothing recomputed

    new = dataclasses.replace(tiny, targets={**TARGETS, "hidden_size": 16})
    summary, lines = _run(new)
    ran = _ran(lines)
    assert ran[0] == "stage: architecture (targets) (recomputed: targets changed)"
    assert "cached: importance" in lines and len(ran) == 5
    assert load_model(out / "hf")[0].config.hidden == 16
    assert json.loads((out / "compress_config.json").read_text())["targets"]["hidden_size"] == 16
    assert "HF export:" in (out / "report.md").read_text()

    longer = dataclasses.replace(new, distill=dataclasses.replace(TRAIN, steps=3))
    _, lines = _run(longer)
    assert _ran(lines)[0] == "stage: distillation (recomputed: distill changed)"
    assert len(_ran(lines)) == 3  # distillation, evaluation, export
    steps = [
        json.loads(r)["step"] for r in (out / "student" / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(steps) == 3

    more = dataclasses.replace(longer, calibration=ScoreConfig(samples=8, seq_len=16))
    _, lines = _run(more)
    assert _ran(lines)[0] == "stage: importance (recomputed: calibration changed)"
    assert len(_ran(lines)) == 6

    np.save(tmp_path / "data.npy", np.random.default_rng(1).integers(1, 50, size=(64, 17)))
    summary, lines = _run(more)
    assert _ran(lines)[0] == "stage: importance (recomputed: data changed)"
    assert summary["export"] == str(out / "hf")
    assert "HF export:" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_failed_stage_is_redone_and_an_interrupted_distillation_resumes(
    tiny, tmp_path, monkeypatch
):
    import jaxprune.pipeline.compress as pipeline
    from jaxprune.train import trainer

    original = trainer._device_batch
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # after the step-2 checkpoint
            raise RuntimeError("killed")
        return original(*a, **k)

    cfg = dataclasses.replace(tiny, distill=dataclasses.replace(TRAIN, steps=4))
    monkeypatch.setattr(trainer, "_device_batch", interrupted)
    with pytest.raises(RuntimeError, match="killed"):
        _run(cfg)
    counted = {"n": 0}

    def counting(*a, **k):
        counted["n"] += 1
        return original(*a, **k)

    def broken_export(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(trainer, "_device_batch", counting)
    monkeypatch.setattr(pipeline, "export", broken_export)
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="disk full"):
        run_compress(cfg, log=lines.append)
    monkeypatch.undo()
    assert "stage: distillation (resuming the unfinished run)" in lines
    assert counted["n"] == 2  # steps 3 and 4 only: resumed from the step-2 checkpoint
    out = tmp_path / "out"
    assert not (out / "hf").exists()

    summary, lines = _run(cfg)
    assert _ran(lines) == ["stage: export (recomputed: the previous run did not finish it)"]
    assert summary["export"] == str(out / "hf") and (out / "hf" / "config.json").is_file()
    assert "HF export:" in (out / "report.md").read_text()
