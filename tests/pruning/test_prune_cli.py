"""End to end: HF model -> importance -> prune -> export -> transformers reproduces our logits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.torch

import transformers  # noqa: E402

from jaxprune.cli import main  # noqa: E402
from jaxprune.converters.api import load_model  # noqa: E402
from jaxprune.testing.hf_models import logits, random_model, save  # noqa: E402

TOKENS = np.random.default_rng(1).integers(0, 61, size=(2, 10))


@pytest.mark.parametrize(
    ("family", "targets", "pattern"),
    [
        (
            "nemotron_h",
            "hidden_size=24,mamba_num_heads=3,mamba_head_dim=3,intermediate_size=30,"
            "num_attention_heads=2,moe_intermediate_size=8,"
            "moe_shared_expert_intermediate_size=16,num_hidden_layers=4",
            None,
        ),
        (
            "llama",
            "hidden_size=24,intermediate_size=20,num_attention_heads=2,num_hidden_layers=1",
            "*-",
        ),
    ],
)
def test_importance_prune_export_reload(family, targets, pattern, tmp_path, capsys):
    src = save(random_model(family, seed=5), tmp_path / "src")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).integers(0, 61, size=(16, 24)))
    assert (
        main(
            [
                "importance",
                str(src),
                "--data",
                str(tmp_path / "calib.npy"),
                "--out",
                str(tmp_path / "scores.npz"),
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "prune",
                str(src),
                str(tmp_path / "pruned"),
                "--scores",
                str(tmp_path / "scores.npz"),
                "--target",
                targets,
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "total" in table and "->" in table
    assert main(["export", str(tmp_path / "pruned"), str(tmp_path / "hf")]) == 0
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["hidden_size"] == 24
    pruned, _ = load_model(tmp_path / "pruned")
    if pattern:
        assert pruned.config.pattern == pattern
    else:
        assert len(cfg["layers_block_type"]) == 4 and cfg["mamba_num_heads"] == 3
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = np.asarray(jax.jit(lambda m, t: m(t))(pruned, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(logits(hf, TOKENS), ours, atol=1e-4, rtol=0)


def test_prune_refuses_scores_of_another_model(tmp_path, capsys):
    a = save(random_model("llama", seed=1), tmp_path / "a")
    b = save(random_model("qwen3", seed=1), tmp_path / "b")
    np.save(tmp_path / "calib.npy", np.zeros((4, 8), np.int64))
    assert (
        main(
            [
                "importance",
                str(a),
                "--data",
                str(tmp_path / "calib.npy"),
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "prune",
                str(b),
                str(tmp_path / "out"),
                "--scores",
                str(tmp_path / "s.npz"),
                "--target",
                "hidden_size=16",
            ]
        )
        == 2
    )
    assert "different model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
