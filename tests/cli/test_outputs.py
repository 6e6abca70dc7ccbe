"""What commands print: ``generate --prompt-ids`` (ids, and text with a tokenizer), the
``distill`` summary table (or JSON) and the "compiling" line before the first step."""

import json

import numpy as np
import pytest

from jaxprune.cli import EXIT_USAGE, main
from jaxprune.converters.native import save_native
from jaxprune.inference import Decoder, generate_ids
from jaxprune.nn.model import init_model
from jaxprune.testing.configs import compress_config
from jaxprune.testing.tokenizers import write_tokenizer

WORDS = ["[UNK]", *(f"w{i}" for i in range(49))]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = init_model(compress_config(), 0)
    save_native(root / "bare", model, family="nemotron_h")
    save_native(root / "tok", model, family="nemotron_h")
    write_tokenizer(root / "tok", WORDS)
    np.save(root / "ids.npy", np.random.default_rng(0).integers(1, 50, (16, 17)))
    return root, model


def test_prompt_ids_print_the_greedy_continuation_without_a_tokenizer(models, capsys):
    root, model = models
    argv = ["generate", str(root / "bare"), "--prompt-ids", "1,2,3", "--prompt-ids", "4"]
    assert main([*argv, "--max-new-tokens", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    want = generate_ids(Decoder(model), [[1, 2, 3], [4]], 3)
    assert [r["prompt_ids"] for r in rows] == [[1, 2, 3], [4]]
    assert [r["completion_ids"] for r in rows] == want
    assert all(len(w) == 3 for w in want) and "completion" not in rows[0]


def test_prompt_ids_also_print_text_when_the_model_has_a_tokenizer(models, capsys):
    root, _ = models
    argv = ["generate", str(root / "tok"), "--prompt-ids", "1,2,3", "--max-new-tokens", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[0] ids: ") and len(out[0].split()) == 4
    assert out[1].startswith("[0] text: ")


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--prompt-ids", "1,x"], "comma-separated token ids"),
        (["--prompt-ids", "1", "--prompt", "w1"], "not allowed with argument"),
        ([], "one of the arguments --prompt --prompt-ids is required"),
    ],
)
def test_bad_prompt_ids_are_usage_errors(models, capsys, argv, says):
    with pytest.raises(SystemExit) as e:
        main(["generate", str(models[0] / "bare"), *argv])
    assert e.value.code == EXIT_USAGE and says in capsys.readouterr().err


def test_ids_outside_the_vocabulary_are_one_line(models, capsys):
    assert main(["generate", str(models[0] / "bare"), "--prompt-ids", "1,50"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[50] are outside the vocabulary [0, 50)" in err


@pytest.mark.parametrize("as_json", [False, True])
def test_distill_says_it_compiles_and_ends_with_a_table(models, tmp_path, capsys, as_json):
    root, _ = models
    m = str(root / "bare")
    argv = ["distill", "--teacher", m, "--student", m, "--data", str(root / "ids.npy")]
    argv += ["--eval-data", str(root / "ids.npy"), "--steps", "2", "--batch-size", "2"]
    argv += ["--seq-len", "16", "--mesh", "1,1,1", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv + (["--json"] if as_json else [])) == 0
    captured = capsys.readouterr()
    assert "compiling the distillation step" in captured.err
    if as_json:
        summary = json.loads(captured.out.strip().splitlines()[-1])  # the last line
        assert summary["step"] == 2 and "loss" in summary["eval"]
        return
    lines = captured.out.strip().splitlines()
    start = lines.index(f"done: model written to {tmp_path / 'run'}")  # after the eval logs
    table = {line.rsplit(None, 1)[0].strip(): line.split()[-1] for line in lines[start + 1 :]}
    assert table["steps"] == "2" and table["skipped steps"] == "0"
    assert float(table["eval loss"]) > 0 and "train loss" in table
