import json
import math

import jax
import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from jaxprune.data import load_rows
from jaxprune.data import text as data_text
from jaxprune.evaluation import evaluate_lm_loss
from jaxprune.nn.model import init_model
from jaxprune.testing.configs import hybrid_config
from jaxprune.tokenizer import eos_token_id

VOCAB = {"[UNK]": 0, "</s>": 1, "the": 2, "cat": 3, "sat": 4, "on": 5, "mat": 6, "a": 7, "dog": 8}
VOCAB["."] = 9


def word_tokenizer(with_eos: bool = True) -> Tokenizer:
    """A whitespace word-level tokenizer with a fixed vocabulary (ids known by hand)."""
    vocab = dict(VOCAB) if with_eos else {k: v for k, v in VOCAB.items() if k != "</s>"}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return tok


class CountingTokenizer:
    """Delegates to a real tokenizer and counts the encode calls (to see text chunking)."""

    def __init__(self, tok: Tokenizer):
        self.tok, self.calls = tok, 0

    def encode(self, text, add_special_tokens=True):
        self.calls += 1
        return self.tok.encode(text, add_special_tokens=add_special_tokens)

    def encode_batch(self, texts, add_special_tokens=True):
        self.calls += 1
        return self.tok.encode_batch(texts, add_special_tokens=add_special_tokens)

    def token_to_id(self, token):
        return self.tok.token_to_id(token)


@pytest.fixture(scope="module")
def model():
    # A large init scale makes per-token losses vary a lot, so a stray padding row would show.
    return init_model(hybrid_config(initializer_range=0.5), 0)


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(0).integers(0, 61, (7, 11)).astype(np.int64)


def reference_loss(model, tokens: np.ndarray) -> float:
    """Mean next-token NLL from the full-forward logits, in float64 numpy."""
    logits = np.asarray(jax.jit(lambda m, t: m(t))(model, tokens), np.float64)[:, :-1]
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = tokens[:, 1:]
    return float(-np.take_along_axis(logp, targets[..., None], -1).mean())


def test_loss_matches_numpy_reference_with_a_padded_last_batch(model, rows):
    out = evaluate_lm_loss(model, rows, batch_size=3)  # 7 rows -> batches of 3, 3, 1 + 2 pad
    ref = reference_loss(model, rows)
    np.testing.assert_allclose(out["loss"], ref, rtol=1e-5)
    assert out["tokens"] == 7 * 10 and out["rows"] == 7
    assert isinstance(out["tokens"], int) and isinstance(out["loss"], float)
    assert out["ppl"] == pytest.approx(math.exp(out["loss"]), rel=1e-12)
    # The check is sensitive: counting the two all-zero padding rows would move the loss.
    padded = np.concatenate([rows, np.zeros((2, 11), rows.dtype)])
    assert abs(reference_loss(model, padded) - ref) > 1e-3
    assert abs(ref - math.log(61)) > 0.1  # not a near-uniform model


def test_batch_size_invariance(model, rows):
    losses = [evaluate_lm_loss(model, rows, batch_size=b)["loss"] for b in (1, 3, 8)]
    np.testing.assert_allclose(losses, losses[0], rtol=1e-6, atol=1e-6)


def test_progress_bar(model, rows, capsys):
    out = evaluate_lm_loss(model, rows[:4], batch_size=3, progress=True)
    assert out["rows"] == 4 and out["tokens"] == 40
    err = capsys.readouterr().err
    assert "eval" in err and "4/4" in err and "loss=" in err


def test_out_of_vocab_and_bad_rows_are_errors(model, rows):
    bad = rows.copy()
    bad[2, 4] = 61
    with pytest.raises(
        ValueError, match=r"token id 61 at row 2, position 4 .*vocabulary \[0, 61\)"
    ):
        evaluate_lm_loss(model, bad)
    bad[2, 4] = -1
    with pytest.raises(ValueError, match="token id -1"):
        evaluate_lm_loss(model, bad)
    with pytest.raises(ValueError, match="integers"):
        evaluate_lm_loss(model, rows.astype(np.float32))
    with pytest.raises(ValueError, match="T >= 2"):
        evaluate_lm_loss(model, rows[:, :1])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_lm_loss(model, rows, batch_size=0)


def test_npy_stream_is_cut_into_windows(tmp_path):
    path = tmp_path / "stream.npy"
    np.save(path, np.arange(23, dtype=np.int64))
    got = load_rows(path, seq_len=5)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.arange(20).reshape(4, 5))
    np.testing.assert_array_equal(load_rows(path, seq_len=5, max_rows=2), got[:2])
    np.testing.assert_array_equal(load_rows(str(path), seq_len=23), np.arange(23)[None])


def test_npy_rows_are_used_as_given(tmp_path):
    arr = np.random.default_rng(1).integers(0, 1000, (3, 7)).astype(np.uint16)
    path = tmp_path / "rows.npy"
    np.save(path, arr)
    got = load_rows(path, seq_len=100)  # seq_len is ignored for 2-D input
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, arr)
    np.testing.assert_array_equal(load_rows(path, seq_len=100, max_rows=2), arr[:2])


@pytest.mark.parametrize("chunk", [1 << 20, 4], ids=["one-piece", "chunked"])
def test_txt_is_one_token_stream(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(data_text, "_TEXT_CHUNK_CHARS", chunk)
    path = tmp_path / "data.txt"
    path.write_text("the cat sat\non the mat.\n\na dog sat\n", encoding="utf-8")
    tok = CountingTokenizer(word_tokenizer())
    got = load_rows(path, seq_len=3, tokenizer=tok)
    # stream: the cat sat on the mat . a dog sat </s> = 2 3 4 5 2 6 9 7 8 4 1 (EOS in the tail)
    np.testing.assert_array_equal(got, [[2, 3, 4], [5, 2, 6], [9, 7, 8]])
    assert (tok.calls > 1) == (chunk == 4)
    np.testing.assert_array_equal(load_rows(path, seq_len=3, tokenizer=tok, max_rows=2), got[:2])


@pytest.mark.parametrize("chunk", [1 << 20, 4], ids=["one-piece", "chunked"])
def test_jsonl_documents_are_eos_separated(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(data_text, "_TEXT_CHUNK_CHARS", chunk)
    path = tmp_path / "data.jsonl"
    docs = ["the cat sat", "a dog", "on the mat ."]
    lines = [
        json.dumps({"text": docs[0], "id": 0}),
        "",
        *(json.dumps({"text": d}) for d in docs[1:]),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = word_tokenizer()
    assert eos_token_id(tok) == 1
    got = load_rows(path, seq_len=4, tokenizer=tok)
    # the cat sat </s> a dog </s> on the mat . </s>
    np.testing.assert_array_equal(got, [[2, 3, 4, 1], [7, 8, 1, 5], [2, 6, 9, 1]])
    # Without an EOS token the documents are simply concatenated.
    plain = word_tokenizer(with_eos=False)
    assert eos_token_id(plain) is None
    got = load_rows(path, seq_len=4, tokenizer=plain)
    np.testing.assert_array_equal(got, [[2, 3, 4, 7], [8, 5, 2, 6]])


def test_rows_from_a_file_evaluate_end_to_end(tmp_path, model):
    path = tmp_path / "stream.npy"
    stream = np.random.default_rng(2).integers(0, 61, 50).astype(np.int32)
    np.save(path, stream)
    rows = load_rows(path, seq_len=8)  # 6 rows, 2 tokens dropped
    out = evaluate_lm_loss(model, rows, batch_size=4)
    assert out["rows"] == 6 and out["tokens"] == 6 * 7
    np.testing.assert_allclose(
        out["loss"], reference_loss(model, stream[:48].reshape(6, 8)), rtol=1e-5
    )


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_rows(tmp_path / "missing.npy", seq_len=4)
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"unsupported file type '\.csv'"):
        load_rows(tmp_path / "data.csv", seq_len=4)
    txt = tmp_path / "data.txt"
    txt.write_text("the cat\n")
    with pytest.raises(ValueError, match=r"needs the model's tokenizer \(tokenizer.json\)"):
        load_rows(txt, seq_len=4)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no tokens"):
        load_rows(tmp_path / "empty.txt", seq_len=4, tokenizer=word_tokenizer())
    with pytest.raises(ValueError, match="max_rows"):
        load_rows(txt, seq_len=4, tokenizer=word_tokenizer(), max_rows=0)
    with pytest.raises(ValueError, match="seq_len"):
        load_rows(txt, seq_len=1, tokenizer=word_tokenizer())


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "the cat"}\n{"body": "a dog"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r'line 2: expected a JSON object with a "text" field'):
        load_rows(path, seq_len=2, tokenizer=word_tokenizer())
    path.write_text('{"text": "the cat"}\n\n{"text": "a dog"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: invalid JSON"):
        load_rows(path, seq_len=2, tokenizer=word_tokenizer())
    path.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(ValueError, match='line 1: "text" must be a string'):
        load_rows(path, seq_len=2, tokenizer=word_tokenizer())


def test_npy_errors(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(10, dtype=np.float32))
    with pytest.raises(ValueError, match="integer"):
        load_rows(path, seq_len=4)
    np.save(path, np.arange(3))
    with pytest.raises(ValueError, match=r"\(3 tokens\) is shorter than seq_len=8"):
        load_rows(path, seq_len=8)
    np.save(path, np.array([3, -1, 4, 5]))
    with pytest.raises(ValueError, match="negative token id"):
        load_rows(path, seq_len=2)
    np.save(path, np.zeros((4, 1), np.int32))
    with pytest.raises(ValueError, match="T >= 2"):
        load_rows(path, seq_len=2)
    np.save(path, np.zeros((2, 2, 2), np.int32))
    with pytest.raises(ValueError, match="shape"):
        load_rows(path, seq_len=2)
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read"):
        load_rows(path, seq_len=2)
