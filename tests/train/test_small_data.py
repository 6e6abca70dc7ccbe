"""Data too small for one batch is refused (naming the data, its token count and what one
batch needs) by the trainer, ``distill`` and ``train``; ``importance`` names its data
calibration data."""

import numpy as np
import pytest

from jaxprune.cli import main
from jaxprune.converters.native import save_model
from jaxprune.data import Corpus
from jaxprune.data.pipeline import check_one_batch
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.testing.configs import compress_config
from jaxprune.testing.train import VOCAB, small_config
from jaxprune.train import TrainConfig, run

NEED = r"has 49 tokens, too few for one batch: batch_size 4 x seq_len 16 \+ 1 = 65 tokens"


def corpus(n: int) -> Corpus:
    """One document of ``n`` tokens."""
    return Corpus([np.arange(n, dtype=np.int32) % VOCAB], np.zeros(1, np.int64))


@pytest.fixture
def tiny(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    save_model(model, init_model(small_config(), 0), family="nemotron_h", hf_config={})
    np.save(tmp_path / "small.npy", np.arange(49, dtype=np.int32) % VOCAB)
    return tmp_path


def test_check_one_batch_counts_tokens():
    check_one_batch(corpus(65), batch_size=4, seq_len=16)  # 4 x 16 inputs + the last target
    with pytest.raises(UserError, match=r"^training data has 64 tokens.*= 65 tokens"):
        check_one_batch(corpus(64), batch_size=4, seq_len=16)


def test_the_trainer_refuses_before_writing(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=4, seq_len=16, mesh=(1, 1, 1), progress=False)
    student = init_model(small_config(), 0)
    with pytest.raises(UserError, match="training data has 49 tokens"):
        run(cfg, student=student, train_source=corpus(49), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["distill", "train"])
def test_distill_and_train_refuse_data_smaller_than_one_batch(tiny, command, capsys):
    models = ["--teacher", str(tiny / "model"), "--student", str(tiny / "model")]
    argv = [command, *(models if command == "distill" else [str(tiny / "model")])]
    argv += ["--data", str(tiny / "small.npy"), "--steps", "2", "--batch-size", "4"]
    argv += ["--seq-len", "16", "--mesh", "1,1,1", "--out", str(tiny / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"data {str(tiny / 'small.npy')!r} " in err[0]
    assert __import__("re").search(NEED, err[0])
    assert not (tiny / "out").exists()


def test_importance_calls_short_calibration_data_calibration_data(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    save_model(model, init_model(compress_config(), 0), family="nemotron_h", hf_config={})
    np.save(tmp_path / "calib.npy", np.arange(10, dtype=np.int32))
    argv = ["importance", str(model), "--data", str(tmp_path / "calib.npy")]
    argv += ["--seq-len", "16", "--out", str(tmp_path / "s.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "calibration data: the token stream of" in err and "(10 tokens)" in err
    assert "seq_len=16" in err and not (tmp_path / "s.npz").exists()
