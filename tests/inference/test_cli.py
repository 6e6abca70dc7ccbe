"""``generate`` and ``bench`` commands, driven through their own parsers."""

import argparse
import json

import numpy as np
import pytest
from flax import nnx
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from jaxprune.cli.inference import add_parsers
from jaxprune.inference import Decoder, generate_text
from jaxprune.inference.report import to_markdown
from jaxprune.nn import HybridLM
from jaxprune.testing.configs import hybrid_config


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)


def _char_tokenizer(vocab: str) -> Tokenizer:
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(vocab)}, unk_token=vocab[0]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.decoder = decoders.Fuse()
    return tok


@pytest.mark.slow
def test_bench_reports_every_model_and_ratios(capsys):
    argv = ["bench", "tiny-hybrid", "tiny-llama", "--prompt-len", "16", "--gen-len", "3"]
    assert _run([*argv, "--batch", "1,2", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [
        ("tiny-hybrid", 1),
        ("tiny-hybrid", 2),
        ("tiny-llama", 1),
        ("tiny-llama", 2),
    ]
    for r in rows:
        assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 and r["ttft_s"] > 0
        assert r["cache_bytes_per_seq"] == r["kv_bytes_per_seq"] + r["ssm_bytes_per_seq"]
    assert rows[0]["decode_tok_s_ratio"] == 1.0 and rows[2]["ssm_bytes_per_seq"] == 0
    assert rows[0]["ssm_bytes_per_seq"] > 0
    assert "| tiny-llama | 16 | 2 |" in to_markdown(report)


def test_bench_rejects_bad_lists():
    with pytest.raises(SystemExit):
        _run(["bench", "tiny-hybrid", "--batch", "0"])


@pytest.mark.slow
def test_generate_text_streams_batched_prompts_with_stop_strings():
    vocab = "abcdefghijklmnopqrstuvwxyz .,;:!?0123456789-_=+*/()[]{}<>ABCD"
    tok = _char_tokenizer(vocab)
    model = HybridLM(hybrid_config(), rngs=nnx.Rngs(0))
    dec = Decoder(model)
    seen = []
    prompts = ["abc", "hello world"]
    texts = generate_text(dec, tok, prompts, 6, multiple=8, on_step=lambda i, t: seen.append(t))
    assert len(seen) == 6 and seen[-1] == texts
    assert all(len(t) == 6 for t in texts)
    for p, t in zip(prompts, texts):
        alone = generate_text(dec, tok, [p], 6, multiple=8)[0]
        assert t == alone
    cut = generate_text(dec, tok, prompts[1:], 6, stop=[texts[1][3]], multiple=8)[0]
    assert cut == texts[1][: texts[1].index(texts[1][3])]
    assert np.all([isinstance(t, str) for t in texts])


def test_generate_command_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        _run(["generate", "tiny-hybrid", "--prompt", "hi", "--max-new-tokens", "2"])
