"""The Python API: ``jaxprune.compress`` on in-memory inputs, its refusals, ``as_corpus``,
the lazy top-level names, every snippet of docs/python_api.md and the example script."""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import jaxprune
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.testing.tokenizers import word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python_api.md"


def _ids(n: int = 8, t: int = 9) -> np.ndarray:
    return np.random.default_rng(0).integers(1, 256, size=(n, t))


def test_import_jaxprune_stays_cheap_and_names_resolve():
    code = "import jaxprune, sys; print('jax' in sys.modules); print(jaxprune.compress.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out == ["False", "jaxprune.api"]
    for name in jaxprune.__all__:
        assert getattr(jaxprune, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'compres'"):
        jaxprune.compres  # noqa: B018


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"distil": {"steps": 2}}, "unknown option 'distil'; known: calibration"),
        ({"distill": {"step": 2}}, "distill: unknown field 'step'; known: steps"),
        ({"calibration": {"sample": 2}}, "calibration: unknown field 'sample'"),
        ({"targets": {"hiden_size": 8}}, "did you mean 'hidden_size'"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, kwargs, message):
    kw = {"targets": {"hidden_size": 32}, **kwargs}
    with pytest.raises(UserError, match=message) as e:
        jaxprune.compress("tiny-llama", _ids(), out=tmp_path / "out", **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_bad_model_and_data_are_refused(tmp_path):
    with pytest.raises(UserError, match="model must be a path, a preset name"):
        jaxprune.compress(3, _ids(), targets={"hidden_size": 32})
    with pytest.raises(UserError, match=r"data must be a path, int token ids .*float64"):
        jaxprune.compress("tiny-llama", np.ones((4, 4)), targets={"hidden_size": 32})
    with pytest.raises(UserError, match="text data needs a tokenizer"):
        jaxprune.compress("tiny-llama", ["a b", "c"], targets={"hidden_size": 32})


def test_leaves_no_files_without_out(tmp_path, monkeypatch):
    """A refused run and its temporary inputs leave nothing behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(UserError, match="larger than the source"):
        jaxprune.compress("tiny-llama", _ids(), targets={"hidden_size": 999})
    assert list(tmp_path.iterdir()) == []


def test_as_corpus_keeps_documents():
    ids = _ids(3, 5)
    c = jaxprune.as_corpus(ids)
    assert c.num_tokens == 15 and c.doc_starts.tolist() == [0, 5, 10]
    np.testing.assert_array_equal(c.tokens(5, 10), ids[1])
    assert jaxprune.as_corpus(ids[0]).num_docs == 1
    tok = word_tokenizer(["<unk>", "</s>", "a", "b"])
    text = jaxprune.as_corpus(["a b", "b"], tokenizer=tok)
    assert text.tokens(0, 10).tolist() == [2, 3, 1, 3, 1]  # EOS (guessed "</s>") after each
    assert text.doc_starts.tolist() == [0, 3]
    with pytest.raises(UserError, match="needs a tokenizer"):
        jaxprune.as_corpus(["a"])


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_docs_cover_every_step():
    text = "\n".join(_snippets())
    for name in ("resolve_model", "score_model", "prune", "run_search", "distill",
                 "evaluate_lm_loss", "export", "compress"):  # fmt: skip
        assert f"jaxprune.{name}(" in text, name


@pytest.mark.slow
def test_every_docs_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for i, code in enumerate(_snippets()):
        exec(compile(code, f"{DOC.name}[{i}]", "exec"), ns)
    assert ns["result"].student.config.layers[1].intermediate == 96
    assert ns["pruned"].config.pattern == "*-" * 3
    assert ns["student"].config == ns["pruned"].config
    assert (ns["hf_dir"] / "config.json").is_file()
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory


@pytest.mark.slow
def test_example_script_functions(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from experiments import python_api_example as ex
    finally:
        sys.path.remove(str(ROOT))
    got = ex.step_by_step(tmp_path / "steps")
    teacher, student = got["teacher"], got["student"]
    assert student.config == got["pruned"].config and student.config.pattern == "*-" * 3
    assert student.config.layers[1].intermediate == 96
    assert set(got["losses"]) == {"teacher", "pruned", "distilled"}
    assert all(np.isfinite(v) for v in got["losses"].values())
    assert got["search"].best.params <= 0.75 * count_params(teacher.config)["total"]
    hf_cfg = json.loads((got["hf"] / "config.json").read_text())
    assert hf_cfg["intermediate_size"] == 96 and hf_cfg["num_hidden_layers"] == 3
    res = ex.one_call(tmp_path / "run")
    assert res.out == tmp_path / "run" and (res.out / "report.md").is_file()
    md = (res.out / "report.md").read_text()
    assert "in-memory-eval.npy` (8 rows x 33 tokens)" in md and "Warning" not in md
    assert res.targets == ex.TARGETS
    assert [r["model"] for r in res.rows] == ["teacher", "pruned", "distilled"]
    saved, _ = jaxprune.load_model(res.out / "student")
    assert saved.config == res.student.config
