"""The lm-eval adapter: exact log-likelihoods, generation with stop strings, offline tasks."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402

from jaxprune.inference import generate  # noqa: E402
from jaxprune.lm_eval_adapter import JaxpruneLM, run_tasks  # noqa: E402
from jaxprune.nn import HybridLM  # noqa: E402
from jaxprune.testing.configs import hybrid_config  # noqa: E402

TASKS = Path(__file__).parents[1] / "data_files" / "lm_eval_tiny"
EOS = "<|endoftext|>"


def _byte_tokenizer() -> Tokenizer:
    """Byte-level tokenizer without merges: 256 byte tokens, then EOS (id 256)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)} | {EOS: 256}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok


@pytest.fixture(scope="module")
def lm() -> JaxpruneLM:
    model = HybridLM(hybrid_config().replace(vocab_size=257), rngs=nnx.Rngs(0))
    return JaxpruneLM(model=model, tokenizer=_byte_tokenizer(), batch_size=3, bucket=16)


@jax.jit
def _forward(model, tokens):
    return model(tokens)


def _reference_logprob(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """From the plain forward, right-padded to 64 tokens (one compile; causal, so exact)."""
    seq = ctx + cont
    tokens = jnp.asarray([seq + [0] * (64 - len(seq))])
    logp = jax.nn.log_softmax(_forward(model, tokens).astype(jnp.float32))[0]
    rows = logp[len(ctx) - 1 : len(seq) - 1]
    picked = rows[jnp.arange(len(cont)), jnp.asarray(cont)]
    return float(picked.sum()), bool(jnp.all(jnp.argmax(rows, -1) == jnp.asarray(cont)))


def test_loglikelihood_equals_summed_log_softmax_of_the_forward(lm):
    pairs = [
        ("the cat", " sat"),
        ("a", " much longer continuation"),
        ("", "hello"),
        ("x" * 20, "y"),
    ]
    reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    got = lm.loglikelihood(reqs, disable_tqdm=True)
    for (ctx, cont), (logp, greedy) in zip(pairs, got):
        c = lm.tok_encode(ctx) if ctx else [lm.eot_token_id]
        whole = lm.tok_encode(ctx + cont)
        ref, ref_greedy = _reference_logprob(lm.model, c, whole[len(c) :] if ctx else whole)
        assert logp == pytest.approx(ref, rel=1e-4, abs=1e-4)
        assert greedy == ref_greedy
    assert all(lp < 0 for lp, _ in got)


def test_greedy_flag_is_true_for_the_models_own_continuation(lm):
    ctx = lm.tok_encode("abc")
    new = np.asarray(generate(lm.model, jnp.asarray([ctx]), 4))[0].tolist()
    (logp, greedy), (_, other) = lm._loglikelihood_tokens(
        [(None, ctx, new), (None, ctx, [(new[0] + 1) % 256] + new[1:])]
    )
    assert greedy and not other


def test_rolling_loglikelihood_sums_disjoint_windows(lm):
    text = "rolling windows over a text longer than the context."
    short = JaxpruneLM(model=lm.model, tokenizer=lm.tokenizer, max_length=16, bucket=16)
    ids = lm.tok_encode(text)
    ref, _ = _reference_logprob(lm.model, [lm.eot_token_id], ids)
    (whole,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    (windowed,) = short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert whole == pytest.approx(ref, rel=1e-4)
    assert windowed < 0 and windowed != pytest.approx(whole, rel=1e-6)


@pytest.mark.slow
def test_generate_until_cuts_at_stop_strings_and_matches_greedy_decoding(lm):
    prompts = ["one two", "a much longer prompt for the batch"]
    kw = {"until": ["zz-never"], "max_gen_toks": 5}
    reqs = [Instance("generate_until", {}, (p, kw), i) for i, p in enumerate(prompts)]
    out = lm.generate_until(reqs)
    for p, text in zip(prompts, out):
        ids = lm.tokenizer.encode(p).ids
        new = np.asarray(generate(lm.model, jnp.asarray([ids]), 5))[0].tolist()
        assert text == lm.tok_decode([t for t in new if t != lm.eot_token_id])
    stop = out[1][2:4] or out[1][:1]
    (cut,) = lm.generate_until([Instance("generate_until", {}, (prompts[1], {"until": [stop]}), 0)])
    assert stop not in cut and out[1].startswith(cut)


@pytest.mark.slow
def test_local_tasks_run_offline_through_run_tasks(tmp_path, monkeypatch, lm):
    from jaxprune.converters.native import save_model

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_model(ckpt, lm.model)
    lm.tokenizer.save(str(ckpt / "tokenizer.json"))
    tasks = "jaxprune_tiny_mc,jaxprune_tiny_gen,jaxprune_tiny_ppl"
    out = run_tasks(str(ckpt), tasks, include_path=str(TASKS), batch_size=4, max_length=64)
    res = out["results"]
    assert 0.0 <= res["jaxprune_tiny_mc"]["acc,none"] <= 1.0
    assert 0.0 <= res["jaxprune_tiny_gen"]["exact_match,none"] <= 1.0
    ppl = res["jaxprune_tiny_ppl"]
    assert math.isfinite(ppl["word_perplexity,none"]) and ppl["byte_perplexity,none"] > 1.0
    with pytest.raises(ValueError, match="unknown lm-eval task"):
        run_tasks(str(ckpt), "no_such_task_xyz", include_path=str(TASKS))
