"""End-to-end outcomes, not just runs (the demo's is in ``test_demo.py``): ``run_compress``
with a parameter budget picks targets that meet it, and the student it writes has exactly
those targets."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig
from jaxprune.converters.api import export, load_model
from jaxprune.counts import count_params
from jaxprune.nn.model import init_model
from jaxprune.pruning.targets import decoder_layers
from jaxprune.testing.configs import compress_config
from jaxprune.testing.train import tiny_train_config


def _target_value(cfg: ModelConfig, key: str) -> int:
    """The value of an HF-named target in a config (uniform across blocks, else an error)."""
    if key == "hidden_size":
        return cfg.hidden
    if key == "num_hidden_layers":
        return len(cfg.layers) // 2 if decoder_layers(cfg) else len(cfg.layers)
    kind, attr = {
        "intermediate_size": (MLPConfig, "intermediate"),
        "num_attention_heads": (AttentionConfig, "num_heads"),
        "num_key_value_heads": (AttentionConfig, "num_kv_heads"),
        "mamba_num_heads": (Mamba2Config, "num_heads"),
        "mamba_head_dim": (Mamba2Config, "head_dim"),
    }[key]
    values = {getattr(x, attr) for x in cfg.layers if isinstance(x, kind)}
    assert len(values) == 1, (key, values)
    return values.pop()


@pytest.fixture
def source(tmp_path) -> tuple[Path, Path]:
    cfg = compress_config()
    export(init_model(cfg, 0), tmp_path / "src", model_type="nemotron_h")
    np.save(tmp_path / "data.npy", np.random.default_rng(0).integers(1, 50, size=(48, 17)))
    return tmp_path / "src", tmp_path / "data.npy"


@pytest.mark.slow
def test_compress_with_a_budget_meets_it_and_builds_the_chosen_targets(source, tmp_path):
    budget = 0.7  # of the source's parameters; the best candidate lands just under it
    from jaxprune.pipeline import CompressConfig, run_compress
    from jaxprune.pruning.scoring import ScoreConfig
    from jaxprune.search.run import SearchConfig

    src, data = source
    out = tmp_path / "out"
    distill = tiny_train_config()
    cfg = CompressConfig(
        model=str(src),
        data=str(data),
        out=str(out),
        search=SearchConfig(params=budget, top_k=2, divisor=8),
        calibration=ScoreConfig(samples=8, seq_len=16),
        eval_rows=4,
        distill=distill,
    )
    summary = run_compress(cfg, log=lambda *a: None)
    teacher, _ = load_model(src)
    student, _ = load_model(out / "student")
    limit = budget * count_params(teacher.config)["total"]
    assert count_params(student.config)["total"] <= limit
    cands = json.loads((out / "search" / "candidates.json").read_text())
    assert cands and all(c["params"] <= limit for c in cands)
    targets = json.loads((out / "arch.json").read_text())["targets"]
    assert targets in [c["targets"] for c in cands] and summary["targets"] == targets
    for key, value in targets.items():
        assert _target_value(student.config, key) == value, key
    # untargeted axes keep the teacher's value
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "mamba_num_heads"):
        if key not in targets:
            assert _target_value(student.config, key) == _target_value(teacher.config, key)
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["distilled"]["params"] == count_params(student.config)["total"]
    assert rows["distilled"]["params"] < rows["teacher"]["params"]
