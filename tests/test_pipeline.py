"""jaxprune compress: every stage runs, outputs are cached, and a rerun resumes."""

import json

import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.converters.api import export, load_model
from jaxprune.nn.model import init_model
from jaxprune.testing.configs import compress_config


@pytest.fixture
def setup(tmp_path):
    cfg = compress_config()
    export(init_model(cfg, 0), tmp_path / "src", model_type="nemotron_h")
    np.save(tmp_path / "data.npy", np.random.default_rng(0).integers(1, 50, size=(64, 17)))
    gin = tmp_path / "run.gin"
    gin.write_text(f"""
CompressConfig.model = "{tmp_path / "src"}"
CompressConfig.data = "{tmp_path / "data.npy"}"
CompressConfig.out = "{tmp_path / "out"}"
CompressConfig.targets = {{"hidden_size": 24, "intermediate_size": 32, "mamba_num_heads": 2}}
CompressConfig.calibration = @ScoreConfig()
ScoreConfig.samples = 16
ScoreConfig.seq_len = 16
CompressConfig.eval_rows = 8
CompressConfig.distill = @distill/TrainConfig()
distill/TrainConfig.steps = 4
distill/TrainConfig.batch_size = 4
distill/TrainConfig.seq_len = 16
distill/TrainConfig.compute_dtype = "float32"
distill/TrainConfig.teacher_dtype = "float32"
distill/TrainConfig.save_every = 2
distill/TrainConfig.mesh = (1, 1, 1)
distill/TrainConfig.progress = False
""")
    return tmp_path, gin


@pytest.mark.slow
def test_compress_runs_every_stage_and_resumes(setup, capsys):
    tmp, gin = setup
    assert main(["compress", str(gin)]) == 0
    out = tmp / "out"
    first = capsys.readouterr().out
    for stage in ("importance", "prune", "distillation", "evaluation", "export"):
        assert f"stage: {stage}" in first
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["teacher", "pruned", "distilled"]
    assert report["rows"][2]["params"] < report["rows"][0]["params"]
    assert (out / "report.png").stat().st_size > 1000 and "report.png" in (
        out / "report.md"
    ).read_text()
    hf, _ = load_model(out / "hf")
    assert hf.config.hidden == 24
    assert main(["compress", str(gin)]) == 0
    assert "stage:" not in capsys.readouterr().out  # everything cached


@pytest.mark.slow
def test_compress_searches_when_given_a_budget(setup, capsys):
    tmp, gin = setup
    args = [
        "compress",
        str(gin),
        "--gin_param",
        "CompressConfig.targets = {}",
        "--gin_param",
        "CompressConfig.search = @SearchConfig()",
        "--gin_param",
        "SearchConfig.params = 0.8",
        "--gin_param",
        "SearchConfig.top_k = 2",
        "--gin_param",
        "SearchConfig.divisor = 8",
    ]
    assert main(args) == 0
    assert "stage: architecture search" in capsys.readouterr().out
    assert (tmp / "out" / "search" / "report.md").is_file()
    targets = json.loads((tmp / "out" / "arch.json").read_text())["targets"]
    assert targets


@pytest.mark.slow
def test_compress_runs_puzzle_and_distills_its_heterogeneous_student(setup, capsys):
    tmp, gin = setup
    binds = [
        "CompressConfig.targets = {}",
        "CompressConfig.puzzle = @PuzzleConfig()",
        "PuzzleConfig.params = 0.6",
        "PuzzleConfig.ffn_divisor = 8",
        "PuzzleConfig.score_samples = 16",
        "PuzzleConfig.eval_samples = 8",
        "PuzzleConfig.memory_context = 64",
        "PuzzleConfig.bld_steps = 2",
        "CompressConfig.export_per_layer_mlp = True",
    ]
    args = ["compress", str(gin)] + [x for b in binds for x in ("--gin_param", b)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "stage: architecture (puzzle)" in printed and "stage: distillation" in printed
    out = tmp / "out"
    report = json.loads((out / "report.json").read_text())
    assert len(report["puzzle"]) == 4  # a variant per parent block
    teacher, _, distilled = report["rows"]
    assert distilled["params"] <= 0.6 * teacher["params"]
    arch = json.loads((out / "arch.json").read_text())
    assert arch["costs"]["params"] == distilled["params"]
    assert (out / "puzzle" / "report.md").is_file()
    student, _ = load_model(out / "student")
    assert student.config == load_model(out / "puzzle" / "student")[0].config
    # exported (per-layer MLP widths allowed), or refused with the layers named
    assert report["export"] == str(out / "hf") or "layers" in report["export"]


def test_compress_config_needs_targets_or_a_budget():
    from jaxprune.pipeline import CompressConfig

    with pytest.raises(ValueError, match="exactly one"):
        CompressConfig(model="m", data="d", out="o")


@pytest.mark.slow
def test_compress_with_a_dmc_stage_gives_a_smaller_model_with_a_smaller_cache(setup, capsys):
    tmp, gin = setup
    binds = [
        "CompressConfig.dmc = @DMCTrainConfig()",
        "DMCTrainConfig.target_ratio = 2.0",
        "DMCTrainConfig.init_val = 1.0",
        "DMCTrainConfig.weight = 10.0",
        "CompressConfig.dmc_train = @dmc/TrainConfig()",
        "dmc/TrainConfig.steps = 12",
        "dmc/TrainConfig.batch_size = 4",
        "dmc/TrainConfig.seq_len = 16",
        "dmc/TrainConfig.compute_dtype = 'float32'",
        "dmc/TrainConfig.teacher_dtype = 'float32'",
        "dmc/TrainConfig.mesh = (1, 1, 1)",
        "dmc/TrainConfig.progress = False",
        "dmc/TrainConfig.optim = @dmc/OptimConfig()",
        "dmc/OptimConfig.lr = 0.03",
    ]
    args = ["compress", str(gin)] + [x for b in binds for x in ("--gin_param", b)]
    assert main(args) == 0
    assert "stage: DMC retrofit" in capsys.readouterr().out
    out = tmp / "out"
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["teacher", "pruned", "distilled", "dmc"]
    assert report["rows"][3]["params"] == report["rows"][2]["params"]  # no new parameters
    assert report["kv_compression"]["ratio"] > 1.0
    assert "DMC KV-cache compression" in (out / "report.md").read_text()
    hf = json.loads((out / "hf" / "config.json").read_text())
    assert hf["jaxprune"]["dmc"]  # the exported student keeps its DMC settings
    assert main(args) == 0
    assert "stage:" not in capsys.readouterr().out  # everything cached
