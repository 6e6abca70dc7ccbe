"""A longer sequence from a given step on (``TrainConfig.seq_len_stages``): the batches
change length there, and a run preempted inside the second stage resumes bitwise."""

import os
import signal

import numpy as np
import pytest

from jaxprune.converters.api import load_model
from jaxprune.errors import UserError
from jaxprune.nn.state import model_params
from jaxprune.testing.train import distill
from jaxprune.train import TrainConfig, trainer

STAGES = ((3, 32),)


def _params(out):
    model, _ = load_model(out)
    return model_params(model)


def test_config_validates_stages():
    cfg = TrainConfig(steps=10, seq_len=16, seq_len_stages=[[4, 64]])
    assert cfg.seq_len_stages == ((4, 64),)
    assert [cfg.seq_len_of(cfg.stage_at(s)) for s in (0, 3, 4, 9)] == [16, 16, 64, 64]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (((0, 32),), ((10, 32),), ((5, 32), (5, 64)), ((5, 32), (3, 64)), ((4, 0),)):
        with pytest.raises(UserError, match="seq_len_stages"):
            TrainConfig(steps=10, seq_len_stages=bad)


@pytest.mark.slow
def test_batches_lengthen_at_the_stage_and_a_resume_inside_it_is_bitwise(tmp_path, monkeypatch):
    shapes = []
    original = trainer._device_batch

    def record(host, *a, **kw):
        shapes.append(host["tokens"].shape)
        return original(host, *a, **kw)

    monkeypatch.setattr(trainer, "_device_batch", record)
    ref = distill(str(tmp_path / "ref"), steps=6, seq_len_stages=STAGES)
    assert ref.status == "done"
    assert [s[1] for s in shapes] == [16, 16, 16, 32, 32, 32]
    assert {s[0] for s in shapes} == {8}

    def preempt_at_5(host, *a, **kw):
        shapes.append(host["tokens"].shape)
        if len(shapes) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(host, *a, **kw)

    shapes.clear()
    monkeypatch.setattr(trainer, "_device_batch", preempt_at_5)
    out = tmp_path / "run"
    first = distill(str(out), steps=6, save_every=100, seq_len_stages=STAGES)
    assert first.status == "preempted" and first.step == 5
    monkeypatch.setattr(trainer, "_device_batch", record)
    shapes.clear()
    done = distill(str(out), steps=6, save_every=100, seq_len_stages=STAGES, resume=True)
    assert done.status == "done" and [s[1] for s in shapes] == [32]
    a, b = _params(out), _params(tmp_path / "ref")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with pytest.raises(UserError, match="seq_len_stages"):
        distill(str(out), steps=8, seq_len_stages=((3, 24),), resume=True)
