"""A heterogeneous Puzzle student (each block its own shape) distills with the trainer,
resumes bitwise, and exports: native always, Nemotron-H in the per-layer MLP form, and a
refusal naming the layers a format cannot express."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.converters.api import export, load_model
from jaxprune.counts import count_params
from jaxprune.data import Corpus
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.nn.state import model_params
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.scoring import score_model
from jaxprune.puzzle.library import LibraryConfig, assemble, build_library
from jaxprune.testing.configs import compress_config
from jaxprune.train import LossConfig, OptimConfig, TrainConfig, run

BASE = compress_config()
M, MLP, ATT = BASE.layers[0], BASE.layers[1], BASE.layers[2]
CFG = BASE.replace(layers=(M, MLP, ATT, MLP, M))  # two Mamba and two MLP blocks
TOKENS = np.random.default_rng(0).integers(0, CFG.vocab_size, 4000).astype(np.int32)


@pytest.fixture(scope="module")
def parent():
    model = init_model(CFG, 0)
    rows = TOKENS[: 8 * 16].reshape(8, 16)
    scores = score_model(model, rows, batch_size=8).scores
    return model, scores, build_library(CFG, scores, LibraryConfig(divisor=8, context=64))


def _student(parent, picks: dict[int, str]):
    model, scores, library = parent
    chosen = [next(v for v in row if v.name == picks.get(i, "keep")) for i, row in
              enumerate(library)]  # fmt: skip
    return materialize(model, assemble(CFG, scores, chosen))


def _kl(p_model, q_model, tokens) -> float:
    p = jax.nn.log_softmax(p_model(tokens), -1)
    q = jax.nn.log_softmax(q_model(tokens), -1)
    return float(jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1)))


def _distill(student, teacher, out, steps, resume=False):
    cfg = TrainConfig(
        steps=steps, batch_size=4, seq_len=16, save_every=2, keep=2, mesh=(2, 1, 1),
        loss=LossConfig(kl="forward"), compute_dtype="float32", teacher_dtype="float32",
        optim=OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant", weight_decay=0.0),
        progress=False,
        async_save=False,
    )  # fmt: skip
    corpus = Corpus([TOKENS], np.array([0, 1500]))
    return run(cfg, student=student, teacher=teacher, train_source=corpus, out=out,
               resume=resume)  # fmt: skip


def test_a_heterogeneous_student_distills_and_resumes_bitwise(parent, tmp_path):
    teacher = parent[0]
    student = _student(parent, {0: "heads2", 1: "ffn24", 3: "ffn32"})
    layers = student.config.layers
    assert layers[0].num_heads == 2 and layers[4].num_heads == 4
    assert [layers[1].intermediate, layers[3].intermediate] == [24, 32]
    straight = _distill(student, teacher, tmp_path / "straight", 6)
    assert straight.status == "done" and straight.step == 6
    held = jnp.asarray(TOKENS[-64:].reshape(4, 16))
    distilled = load_model(tmp_path / "straight")[0]
    assert _kl(teacher, distilled, held) < _kl(teacher, student, held)  # it learned
    out = tmp_path / "run"
    assert _distill(student, teacher, out, 4).step == 4
    assert _distill(student, teacher, out, 6, resume=True).step == 6
    a, b = model_params(load_model(out)[0]), model_params(load_model(tmp_path / "straight")[0])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    reloaded = load_model(out)[0]
    assert reloaded.config == student.config


def test_heterogeneous_exports_and_refusals_name_the_layers(parent, tmp_path):
    mlp_only = _student(parent, {1: "ffn24", 3: "ffn32"})
    with pytest.raises(UserError, match=r"layers 3 \(mlp, differs from layer 1\)"):
        export(mlp_only, tmp_path / "strict", model_type="nemotron_h")
    export(mlp_only, tmp_path / "vllm", model_type="nemotron_h", per_layer_mlp=True)
    hf = json.loads((tmp_path / "vllm" / "config.json").read_text())
    assert hf["intermediate_size"] == [24, 32]
    assert count_params(mlp_only.config)["total"] < count_params(CFG)["total"]
    both = _student(parent, {0: "heads2", 1: "ffn24"})
    with pytest.raises(UserError, match=r"layers 4 \(mamba2, differs from layer 0\)") as e:
        export(both, tmp_path / "mamba", model_type="nemotron_h", per_layer_mlp=True)
    assert "mlp" not in str(e.value)  # per-layer MLP widths are expressible here
    assert not (tmp_path / "mamba").exists() and not (tmp_path / "strict").exists()
