"""An elastic run end to end on a tiny hybrid: nested children within 3% of their budgets,
each extracted child equal to the masked parent, untrained budgets refused, and a
preempted run resumed bitwise."""

import os
import signal

import jax
import numpy as np
import pytest

from jaxprune.counts import count_params
from jaxprune.data import Corpus
from jaxprune.elastic.masks import elastic_mask, one_hot
from jaxprune.elastic.objective import ElasticConfig
from jaxprune.elastic.run import SpaceArgs, load_elastic, resolve_budgets, train_elastic
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.nn.state import model_params
from jaxprune.pruning.masks import full_mask, masked_forward
from jaxprune.pruning.scoring import score_model
from jaxprune.testing.configs import compress_config
from jaxprune.train import LossConfig, OptimConfig, TrainConfig, trainer

BUDGETS = (1.0, 0.75, 0.5)
ARGS = SpaceArgs(fractions=(1.0, 0.875, 0.75, 0.625, 0.5, 0.375), align=1, max_skip=0.25)
TOKENS = np.random.default_rng(5).integers(0, 50, (2, 12))


def corpus() -> Corpus:
    """Token ids below the parent's vocabulary (50), in a few documents."""
    toks = np.random.default_rng(1).integers(0, 50, 6000).astype(np.int32)
    return Corpus([toks], np.array([0, 130, 1100, 2500, 4000]))


def _setup(steps=12):
    parent = init_model(compress_config(), 0)
    rows = np.random.default_rng(0).integers(0, 50, (8, 16))
    scores = score_model(parent, rows, depth_methods=("nmse",), batch_size=4, depth_batches=1)
    train = TrainConfig(
        steps=steps, batch_size=4, seq_len=16, save_every=4, mesh=(1, 1, 1), log_every=1,
        loss=LossConfig(kl="forward", ce_weight=0.0), optim=OptimConfig(lr=1e-3, warmup_steps=1),
        compute_dtype="float32", teacher_dtype="float32", progress=False,
    )  # fmt: skip
    full = count_params(parent.config)["total"]
    return parent, scores, train, ElasticConfig(resolve_budgets(BUDGETS, full), router_lr=0.05)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    parent, scores, train, el = _setup()
    out = tmp_path_factory.mktemp("elastic") / "run"
    res = train_elastic(parent, scores, train_source=corpus(), out=out, train=train,
                        elastic=el, space_args=ARGS)  # fmt: skip
    assert res.status == "done" and res.step == train.steps
    return out, parent


def test_children_are_nested_within_budget_and_equal_the_masked_parent(trained):
    out, parent = trained
    e = load_elastic(out)
    full = count_params(parent.config)["total"]
    assert e.info["parent_params"] == full
    recs = [e.child_record(b) for b in BUDGETS]
    for b, r in zip(BUDGETS, recs):
        child = e.child(b)
        n = count_params(child.config)["total"]
        assert n == r["params"] and abs(n / (b * full) - 1) <= 0.03, (b, n / full)
        mask = elastic_mask(full_mask(e.parent), e.space, one_hot(e.space, r["choices"]))
        masked = np.asarray(jax.jit(masked_forward)(e.parent, mask, TOKENS))
        direct = np.asarray(jax.jit(lambda m, t: m(t))(child, TOKENS))
        np.testing.assert_allclose(masked, direct, atol=1e-4, rtol=1e-4)
    assert recs[0]["params"] == full  # the full budget is the parent itself
    for big, small in zip(recs, recs[1:]):
        for k in big["choices"]:
            assert all(s >= g for g, s in zip(big["choices"][k], small["choices"][k]))
    with pytest.raises(UserError, match="not trained"):
        e.child_record(0.6)


def test_bad_budgets_are_refused_before_any_work(tmp_path):
    parent, scores, train, _ = _setup()
    full = count_params(parent.config)["total"]
    with pytest.raises(UserError, match="fraction above 1"):
        resolve_budgets((1.0, 1.2), full)
    with pytest.raises(UserError, match="outside"):
        resolve_budgets((1.0, 2 * full), full)
    assert resolve_budgets((1.0, 0.5, 12_000), full) == (full, 0.5 * full, 12_000)
    with pytest.raises(UserError, match="repeated"):
        resolve_budgets((0.5, 0.5), full)
    with pytest.raises(UserError, match="smallest child"):
        el = ElasticConfig(resolve_budgets((1.0, 0.01), full))
        kw = dict(train_source=corpus(), train=train, elastic=el, space_args=ARGS)
        train_elastic(parent, scores, out=tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_preempted_elastic_run_resumes_bitwise(tmp_path, trained, monkeypatch):
    ref_out, _ = trained
    parent, scores, train, el = _setup()
    out = tmp_path / "run"
    calls, original = {"n": 0}, trainer._device_batch

    def preempt_at_6(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*a, **kw)

    monkeypatch.setattr(trainer, "_device_batch", preempt_at_6)
    kw = dict(train_source=corpus(), out=out, train=train, elastic=el, space_args=ARGS)
    assert train_elastic(parent, scores, **kw).status == "preempted"
    monkeypatch.setattr(trainer, "_device_batch", original)
    assert train_elastic(parent, scores, resume=True, **kw).status == "done"
    a, b = load_elastic(out), load_elastic(ref_out)
    pa, pb = model_params(a.parent), model_params(b.parent)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    ra, rb = np.load(out / "router.npz"), np.load(ref_out / "router.npz")
    for k in ra.files:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
    assert a.info["children"] == b.info["children"]


@pytest.mark.slow
def test_uniform_children_load_in_transformers_with_matching_logits(tmp_path):
    import torch
    import transformers

    from jaxprune.converters.api import export

    parent, scores, train, el = _setup(steps=4)
    full = count_params(parent.config)["total"]
    el = ElasticConfig(resolve_budgets((1.0, 0.6), full), router_lr=0.05)
    args = SpaceArgs(fractions=ARGS.fractions, align=1, max_skip=0.25, uniform=True)
    out = tmp_path / "run"
    res = train_elastic(parent, scores, train_source=corpus(), out=out, train=train,
                        elastic=el, space_args=args)  # fmt: skip
    assert res.status == "done"
    e = load_elastic(out)
    assert len(e.space.axis("mlp").rows) == 1  # one FFN width for every layer
    child = e.child(0.6)
    assert count_params(child.config)["total"] < 0.62 * full
    export(child, tmp_path / "hf", model_type="nemotron_h")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        theirs = hf(torch.as_tensor(TOKENS)).logits.float().numpy()
    ours = np.asarray(jax.jit(lambda m, t: m(t))(child, TOKENS))
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_a_heterogeneous_child_exports_in_the_per_layer_form(trained, tmp_path):
    """Without --uniform each MLP layer has its own width: strict export refuses, the
    per-layer (vLLM) Nemotron-H form writes the list."""
    import json

    from jaxprune.converters.api import export
    from jaxprune.elastic.extract import extract

    out, _ = trained
    e = load_elastic(out)
    choices = {a.name: [0] * len(a.rows) for a in e.space.axes}
    choices["mlp"] = [0, 2]  # the two MLP layers at different widths
    child = extract(e.parent, e.space, choices)
    widths = [x.intermediate for x in child.config.layers if x.kind == "mlp"]
    assert widths[0] != widths[1]
    with pytest.raises(ValueError, match="differs"):
        export(child, tmp_path / "strict", model_type="nemotron_h")
    export(child, tmp_path / "vllm", model_type="nemotron_h", per_layer_mlp=True)
    assert (
        json.loads((tmp_path / "vllm" / "config.json").read_text())["intermediate_size"] == widths
    )
