"""Special token ids from the model directory's own files, in the documented order."""

import json

import pytest

from jaxprune.errors import UserError
from jaxprune.testing.tokenizers import word_tokenizer, write_tokenizer
from jaxprune.tokenizer import (
    Tokenizer,
    as_tokenizer,
    load_tokenizer,
    model_tokenizer,
    special_ids,
)

WORDS = ["[UNK]", "<|endoftext|>", "</s>", "<s>", "<pad>", "<eot>", "the", "cat"]
ENDOFTEXT, S_END, S_BEGIN, PAD, EOT = 1, 2, 3, 4, 5


def _json(path, obj):
    path.write_text(json.dumps(obj))


def _ids(tok: Tokenizer) -> tuple:
    return tok.eos_id, tok.bos_id, tok.pad_id


def test_without_config_files_eos_is_the_guess(tmp_path):
    write_tokenizer(tmp_path, WORDS)
    assert _ids(load_tokenizer(tmp_path)) == (ENDOFTEXT, None, None)
    # Without any candidate in the vocabulary there is no EOS at all.
    write_tokenizer(tmp_path / "plain", ["[UNK]", "the", "cat"])
    assert _ids(load_tokenizer(tmp_path / "plain")) == (None, None, None)


def test_each_file_overrides_the_next_in_order(tmp_path):
    write_tokenizer(tmp_path, WORDS)
    _json(tmp_path / "config.json", {"eos_token_id": S_END, "bos_token_id": S_BEGIN,
                                     "pad_token_id": -1})  # fmt: skip
    assert _ids(load_tokenizer(tmp_path)) == (S_END, S_BEGIN, None)  # -1: not declared
    _json(
        tmp_path / "tokenizer_config.json",
        {"eos_token": {"content": "<eot>", "special": True}, "pad_token": "<pad>",
         "bos_token": None},
    )  # fmt: skip
    assert _ids(load_tokenizer(tmp_path)) == (EOT, S_BEGIN, PAD)
    _json(tmp_path / "generation_config.json", {"eos_token_id": [S_END, EOT], "pad_token_id": 0})
    assert _ids(load_tokenizer(tmp_path)) == (S_END, S_BEGIN, 0)  # a list: its first id
    _json(tmp_path / "generation_config.json", {"bos_token_id": ENDOFTEXT})
    assert _ids(load_tokenizer(tmp_path)) == (EOT, ENDOFTEXT, PAD)


def test_unknown_token_string_falls_through(tmp_path):
    write_tokenizer(tmp_path, WORDS)
    _json(tmp_path / "tokenizer_config.json", {"eos_token": "<|im_end|>"})
    _json(tmp_path / "config.json", {"eos_token_id": S_END})
    assert load_tokenizer(tmp_path).eos_id == S_END


def test_a_native_checkpoint_reads_its_kept_hf_config(tmp_path):
    write_tokenizer(tmp_path, WORDS)
    _json(tmp_path / "jaxprune.json", {"format": "jaxprune-native", "hf_config": {
        "eos_token_id": S_END, "bos_token_id": S_BEGIN}})  # fmt: skip
    assert _ids(model_tokenizer(tmp_path)) == (S_END, S_BEGIN, None)
    # a tokenizer.json file reads the special ids of its own directory
    assert _ids(load_tokenizer(tmp_path / "tokenizer.json")) == (S_END, S_BEGIN, None)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("generation_config.json", {"eos_token_id": "</s>"}, "eos_token_id must be an integer"),
        ("generation_config.json", {"eos_token_id": True}, "eos_token_id must be an integer"),
        ("config.json", {"pad_token_id": 99}, r"pad_token_id 99 is outside .*\[0, 8\)"),
        ("tokenizer_config.json", {"bos_token": 3}, "bos_token must be a string"),
        ("generation_config.json", "{not json", "not valid JSON"),
        ("config.json", [1, 2], "expected a JSON object"),
    ],
)
def test_bad_special_ids_are_one_line_user_errors(tmp_path, name, content, match):
    write_tokenizer(tmp_path, WORDS)
    (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(UserError, match=match) as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_or_unreadable_tokenizer(tmp_path):
    assert model_tokenizer(tmp_path) is None
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError, match="cannot read") as info:
        load_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


def test_encode_decode_and_wrapping(tmp_path):
    raw = word_tokenizer(WORDS)
    tok = as_tokenizer(raw)
    assert as_tokenizer(tok) is tok and as_tokenizer(None) is None
    assert tok.raw is raw and _ids(tok) == (ENDOFTEXT, None, None)
    assert tok.encode("the cat the") == [6, 7, 6]
    assert tok.encode_batch(["cat", "the cat"]) == [[7], [6, 7]]
    assert tok.decode([6, 7]) == "the cat"
    assert tok.token_to_id("<pad>") == PAD and tok.token_to_id("dog") is None
    assert tok.vocab_size == len(WORDS)
    assert special_ids(raw, tmp_path) == {"eos_id": ENDOFTEXT, "bos_id": None, "pad_id": None}
