"""load_rows: the training stream (documents with their EOS) cut into rows, read lazily."""

import json

import numpy as np
import pytest

from jaxprune.data import PackedRows, corpus_rows, load_corpus, load_rows, sources
from jaxprune.data import text as data_text
from jaxprune.errors import UserError
from jaxprune.testing.tokenizers import word_tokenizer, write_tokenizer
from jaxprune.tokenizer import load_tokenizer

WORDS = ["[UNK]", "<|endoftext|>", "the", "cat", "sat", "on", "mat", "a", "dog", "<eot>"]
GUESS, EOT = 1, 9


def ids(text: str) -> list[int]:
    return [WORDS.index(w) for w in text.split()]


def _jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture
def model_tok(tmp_path):
    """The model's tokenizer: its EOS (<eot>) comes from generation_config.json, not a guess."""
    write_tokenizer(tmp_path / "model", WORDS)
    (tmp_path / "model" / "generation_config.json").write_text(json.dumps({"eos_token_id": EOT}))
    return load_tokenizer(tmp_path / "model")


def _check_agrees(path, tok, seq_len, max_rows=None):
    """load_rows == the windows of load_corpus's stream == the tokens of the training rows."""
    rows = load_rows(path, seq_len=seq_len, tokenizer=tok, max_rows=max_rows)
    corpus = load_corpus(path, tokenizer=tok)
    n = min(corpus.num_tokens // seq_len, max_rows or corpus.num_tokens)
    stream = corpus.tokens(0, corpus.num_tokens)
    np.testing.assert_array_equal(rows, stream[: n * seq_len].reshape(n, seq_len))
    packed = PackedRows(corpus, seq_len)
    np.testing.assert_array_equal(rows, [packed[i]["tokens"] for i in range(n)])
    np.testing.assert_array_equal(rows, corpus_rows(corpus, seq_len=seq_len, max_rows=max_rows))
    assert rows.dtype == np.int32
    return rows


def test_txt_rows_are_the_training_stream_with_eos(tmp_path, model_tok):
    path = tmp_path / "a.txt"
    path.write_text("the cat sat\non the mat\n")
    rows = _check_agrees(path, model_tok, 7)
    np.testing.assert_array_equal(rows, [ids("the cat sat on the mat") + [EOT]])
    rows = _check_agrees(path, model_tok, 3)  # the tail (EOS) is dropped
    np.testing.assert_array_equal(rows, [ids("the cat sat"), ids("on the mat")])


def test_jsonl_and_directories_agree_with_the_corpus(tmp_path, model_tok):
    path = _jsonl(tmp_path / "d.jsonl", ["the cat", "", "a dog sat", "on the mat"])
    rows = _check_agrees(path, model_tok, 4)
    # the cat <eot> a | dog sat <eot> on | (the mat <eot>: tail); the empty document is skipped
    np.testing.assert_array_equal(rows, [[2, 3, EOT, 7], [8, 4, EOT, 5]])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt").write_text("a dog")
    (tmp_path / "docs" / "a.txt").write_text("the cat sat")
    rows = _check_agrees(tmp_path / "docs", model_tok, 3)
    np.testing.assert_array_equal(rows, [ids("the cat sat"), [EOT, 7, 8]])  # one doc a file
    rows = _check_agrees([path, tmp_path / "docs"], model_tok, 5, max_rows=2)
    assert rows.shape == (2, 5)


def test_a_bare_tokenizer_gets_the_guessed_eos(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", ["the cat", "a dog"])
    rows = _check_agrees(path, word_tokenizer(WORDS), 3)
    np.testing.assert_array_equal(rows, [[2, 3, GUESS], [7, 8, GUESS]])
    rows = load_rows(path, seq_len=3, tokenizer=word_tokenizer(WORDS), eos_id=EOT)
    np.testing.assert_array_equal(rows, [[2, 3, EOT], [7, 8, EOT]])


def test_token_files(tmp_path):
    np.save(tmp_path / "s.npy", np.arange(23, dtype=np.uint16))
    rows = _check_agrees(tmp_path / "s.npy", None, 5)
    np.testing.assert_array_equal(rows, np.arange(20).reshape(4, 5))
    np.arange(10, dtype=np.uint32).tofile(tmp_path / "s.bin")
    rows = load_rows(tmp_path / "s.bin", seq_len=4, bin_dtype="uint32")
    np.testing.assert_array_equal(rows, np.arange(8).reshape(2, 4))


def test_a_2d_npy_is_used_as_given(tmp_path):
    arr = np.random.default_rng(0).integers(0, 50, (4, 6)).astype(np.int64)
    np.save(tmp_path / "r.npy", arr)
    got = load_rows(tmp_path / "r.npy", seq_len=4)  # seq_len ignored
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, arr)
    np.testing.assert_array_equal(load_rows(tmp_path / "r.npy", seq_len=4, max_rows=3), arr[:3])
    with pytest.raises(UserError, match=r"token id \d+ at row \d+, position \d+ is outside"):
        load_rows(tmp_path / "r.npy", seq_len=4, vocab_size=int(arr.max()))
    # inside a list of inputs it is part of the stream, as training reads it
    got = load_rows([tmp_path / "r.npy"], seq_len=4)
    np.testing.assert_array_equal(got, arr.reshape(-1)[:24].reshape(6, 4))


def test_max_rows_reads_no_further_than_needed(tmp_path, monkeypatch, model_tok):
    monkeypatch.setattr(data_text, "_TEXT_CHUNK_CHARS", 8)
    monkeypatch.setattr(sources, "_SCAN_CHUNK", 4)
    txt = tmp_path / "big.txt"
    txt.write_bytes(b"the cat sat\non the mat\n" * 2000 + b"\xff bad utf-8\n")  # > 8 KiB
    np.testing.assert_array_equal(
        load_rows(txt, seq_len=3, tokenizer=model_tok, max_rows=2),
        [ids("the cat sat"), ids("on the mat")],
    )
    with pytest.raises(UserError, match="not valid UTF-8"):  # the whole file is read here
        load_rows(txt, seq_len=3, tokenizer=model_tok)
    jsonl = _jsonl(tmp_path / "d.jsonl", ["the cat sat"] * 8)
    with jsonl.open("a") as f:
        f.write("{broken\n")
    rows = load_rows(jsonl, seq_len=4, tokenizer=model_tok, max_rows=1)
    np.testing.assert_array_equal(rows, [ids("the cat sat") + [EOT]])
    with pytest.raises(UserError, match="line 9: invalid JSON"):
        load_corpus(jsonl, tokenizer=model_tok)
    stream = np.arange(40)
    stream[30] = -1
    np.save(tmp_path / "s.npy", stream)
    np.testing.assert_array_equal(
        load_rows(tmp_path / "s.npy", seq_len=4, max_rows=2), np.arange(8).reshape(2, 4)
    )
    with pytest.raises(UserError, match="negative token id"):
        load_rows(tmp_path / "s.npy", seq_len=4)


def test_bad_input_is_a_one_line_user_error(tmp_path, model_tok):
    txt = tmp_path / "a.txt"
    txt.write_text("the cat")
    np.save(tmp_path / "short.npy", np.arange(3))
    np.save(tmp_path / "one.npy", np.zeros((3, 1), np.int32))
    cases = [
        (dict(path=tmp_path / "none.txt", seq_len=4), "no such file"),
        (dict(path=txt, seq_len=4), r"needs the model's tokenizer \(tokenizer.json\)"),
        (dict(path=txt, seq_len=1, tokenizer=model_tok), "seq_len must be an integer >= 2"),
        (dict(path=txt, seq_len=4, tokenizer=model_tok, max_rows=0), "max_rows"),
        (dict(path=txt, seq_len=8, tokenizer=model_tok), r"\(3 tokens\) is shorter than"),
        (dict(path=tmp_path / "short.npy", seq_len=8), r"\(3 tokens\) is shorter than"),
        (dict(path=tmp_path / "one.npy", seq_len=8), "T >= 2"),
        (dict(path=txt, seq_len=2, tokenizer=model_tok, vocab_size=3), "outside the model's"),
    ]
    for kw, match in cases:
        with pytest.raises(UserError, match=match) as info:
            load_rows(kw.pop("path"), **kw)
        assert "\n" not in str(info.value)
