"""A DMC retrofit trains with the library trainer: the compression loss drives the measured
cache compression to the target, the run resumes bitwise after a preemption, and the DMC
settings survive the native checkpoint and an HF export."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.converters.api import export, load_model
from jaxprune.data import Corpus
from jaxprune.dmc.measure import cache_compression, kv_compression
from jaxprune.dmc.objective import DMCTrainConfig
from jaxprune.dmc.retrofit import dmc_blocks
from jaxprune.dmc.run import retrofit_dmc
from jaxprune.nn.model import init_model
from jaxprune.nn.state import model_params
from jaxprune.testing.configs import llama_config
from jaxprune.testing.train import preempt_at
from jaxprune.train import LossConfig, OptimConfig, TrainConfig

CFG = llama_config()
TOKENS = np.random.default_rng(0).integers(0, CFG.vocab_size, 6000).astype(np.int32)
HELD = TOKENS[-512:].reshape(16, 32)


def _train_cfg(steps, **kw):
    return TrainConfig(
        steps=steps, batch_size=4, seq_len=32, save_every=kw.pop("save_every", 100), keep=2,
        mesh=(1, 1, 1), loss=kw.pop("loss", LossConfig(kl="forward")),
        compute_dtype="float32", teacher_dtype="float32", progress=False, async_save=False,
        optim=OptimConfig(lr=kw.pop("lr", 3e-3), warmup_steps=0, schedule="constant",
                          weight_decay=0.0),
        **kw,
    )  # fmt: skip


def _retrofit(model, out, steps, dmc, **kw):
    resume = kw.pop("resume", False)
    corpus = Corpus([TOKENS[:-512]], np.array([0, 2000]))
    return retrofit_dmc(model, train_source=corpus, out=out, train=_train_cfg(steps, **kw),
                        dmc=dmc, resume=resume)  # fmt: skip


@pytest.fixture(scope="module")
def plain():
    return init_model(CFG, 0)


@pytest.mark.slow
def test_the_compression_loss_reaches_the_target_ratio(plain, tmp_path):
    # a tiny model moves k[D-1] slowly: a smaller offset c and a larger step than at scale
    dmc = DMCTrainConfig(target_ratio=3.0, ramp_fraction=0.5, weight=10.0, init_val=2.0)
    before = kv_compression(_start(plain, dmc), HELD)
    assert before["ratio"] == pytest.approx(1.0)  # the retrofit starts with every append
    lm = LossConfig(kl="none", ce_weight=1.0)
    result = _retrofit(plain, tmp_path / "run", 80, dmc, loss=lm, lr=1e-2)
    assert result.status == "done"
    trained = load_model(tmp_path / "run")[0]
    after = kv_compression(trained, HELD)
    # the loss is one-sided (eq. 10): it pulls up to the target and no further; on random
    # tokens nothing else (the LM loss) pulls back, so the ratio may end above 3
    assert after["ratio"] >= 2.5, after
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["dmc_target"] == pytest.approx(3.0)
    assert rows[-1]["dmc_alpha"] >= (1 - 1 / 3) - 0.05
    assert rows[-1]["dmc_loss"] == pytest.approx(0.0, abs=0.05)
    assert rows[-1]["loss"] < np.log(CFG.vocab_size) + 0.3  # the LM side did not break
    # the ratio eval reports is the slots a generation over the same text fills
    cache = trained.init_cache(len(HELD), HELD.shape[1])
    _, cache = trained.step(jnp.asarray(HELD), cache)
    filled = cache_compression(cache)
    assert filled["ratio"] == pytest.approx(after["ratio"])
    for i, b in after["blocks"].items():
        assert filled["blocks"][i]["heads"] == pytest.approx(b["heads"])
    assert filled["used_bytes"] * after["ratio"] == pytest.approx(filled["plain_bytes"])


def _start(plain, dmc):
    from jaxprune.dmc.run import dmc_student

    return dmc_student(plain, dmc)


@pytest.mark.slow
def test_a_preempted_retrofit_resumes_bitwise(plain, tmp_path, monkeypatch):
    dmc = DMCTrainConfig(target_ratio=2.0)
    _retrofit(plain, tmp_path / "straight", 6, dmc)
    preempt_at(monkeypatch, 3)
    out = tmp_path / "run"
    assert _retrofit(plain, out, 6, dmc).status == "preempted"
    monkeypatch.undo()
    assert _retrofit(plain, out, 6, dmc, resume=True).step == 6
    a = model_params(load_model(out)[0])
    b = model_params(load_model(tmp_path / "straight")[0])
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra = (out / "metrics.jsonl").read_text().splitlines()[-1]
    rb = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1]
    assert json.loads(ra)["dmc_alpha"] == json.loads(rb)["dmc_alpha"]


def _llama():
    """A config transformers' Llama expresses (full RoPE, no q/k norm or biases)."""
    from jaxprune.config import AttentionConfig, MLPConfig, ModelConfig, RopeConfig

    attn = AttentionConfig(
        num_heads=4, num_kv_heads=2, head_dim=8, rope=RopeConfig(theta=500.0), norm_eps=1e-5
    )
    mlp = MLPConfig(23, activation="swiglu")
    return ModelConfig.from_pattern(
        "*-*-", vocab_size=CFG.vocab_size, hidden=20, attention=attn, mlp=mlp
    )


def test_dmc_settings_survive_native_and_hf_round_trips(tmp_path):
    from transformers import AutoModelForCausalLM

    plain = init_model(_llama(), 0)
    dmc = DMCTrainConfig(init_val=4.0, blocks=(0,))
    model = _start(plain, dmc)
    assert dmc_blocks(model.config) == (0,)  # a model may mix DMC and plain attention
    export(model, tmp_path / "hf", model_type="llama")
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    blocks = [str(i) for i in dmc_blocks(model.config)]
    assert sorted(hf["jaxprune"]["dmc"]) == blocks
    assert hf["jaxprune"]["dmc"][blocks[0]] == {"init_val": 4.0}
    back = load_model(tmp_path / "hf")[0]
    assert back.config.layers == model.config.layers
    tokens = jnp.asarray(HELD[:2])
    np.testing.assert_allclose(np.asarray(back(tokens)), np.asarray(model(tokens)), atol=1e-5)
    torch_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")  # still loads
    assert torch_model.config.num_hidden_layers == 2
    # an export of the plain model carries no DMC settings
    export(plain, tmp_path / "plain", model_type="llama")
    assert "jaxprune" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert jax.tree.leaves(model_params(plain))  # the input model was not modified
    assert not dmc_blocks(plain.config)
