"""score_model: the one calibrate-and-score function behind importance, prune, search and
compress."""

import numpy as np
import pytest

from jaxprune.config import MLPConfig, ModelConfig
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.pruning.importance import calibrate, scores
from jaxprune.pruning.scoring import (
    DEPTH_METHODS,
    ScoreConfig,
    Scores,
    calibration_mesh,
    score_model,
    score_with,
)
from jaxprune.testing.configs import compress_config

CFG = compress_config()
ROWS = np.random.default_rng(0).integers(0, 50, size=(16, 12)).astype(np.int32)


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, 0)


@pytest.mark.parametrize("aggregation", ["l2", "mean", "mean_sq"])
def test_equals_calibrating_batch_by_batch(model, aggregation):
    got = score_model(model, ROWS, aggregation=aggregation, batch_size=4, mesh=False or None)
    want = scores(
        calibrate(model, [ROWS[i : i + 4] for i in range(0, 16, 4)], aggregation=aggregation),
        model,
        aggregation,
    )
    assert set(got.scores) == set(want)
    for k in want:
        np.testing.assert_allclose(got.scores[k], want[k], rtol=2e-5, atol=1e-6, err_msg=k)
    assert got.meta["aggregation"] == aggregation and got.meta["samples"] == 16


def test_sharded_calibration_matches_one_device(model):
    mesh = calibration_mesh(8)
    assert mesh is not None and mesh.size == 8  # the tests run on 8 fake CPU devices
    assert calibration_mesh(3) is None  # 3 rows do not split over 8 devices
    sharded = score_model(model, ROWS, batch_size=8, mesh=mesh)
    single = score_model(model, ROWS, batch_size=8, mesh=calibration_mesh(3))
    for k in single.scores:
        np.testing.assert_allclose(sharded.scores[k], single.scores[k], rtol=2e-5, atol=1e-6)


def test_depth_methods_are_added_on_request(model):
    methods = ("loss", "nmse", "hidden_mse")
    sc = score_model(model, ROWS, depth_methods=methods, batch_size=8, depth_batches=1)
    for key in DEPTH_METHODS.values():
        assert sc.scores[key].shape == (len(CFG.layers),)
    assert sorted(sc.scores["depth_nmse"]) == list(range(len(CFG.layers) - 1)) + [
        len(CFG.layers) - 1
    ]
    plain = score_model(model, ROWS, batch_size=8)
    assert "depth_loss" not in plain.scores
    with pytest.raises(UserError, match="rerun importance with --depth-method loss"):
        plain.depth("loss")
    with pytest.raises(UserError, match="depth method"):
        score_model(model, ROWS, depth_methods=("cosine",))


def test_scores_round_trip_and_refuse_another_model(model, tmp_path):
    sc = score_with(model, ROWS, ScoreConfig(batch_size=4, depth_method="loss"), meta={"data": "x"})
    path = sc.save(tmp_path / "s.npz", CFG)
    back = Scores.load(path, CFG)
    assert back.meta["data"] == "x" and back.meta["depth_method"] == "loss"
    for k in sc.scores:
        np.testing.assert_array_equal(back.scores[k], sc.scores[k])
    other = ModelConfig.from_pattern("-", vocab_size=41, hidden=16, mlp=MLPConfig(24))
    with pytest.raises(UserError, match="different model"):
        Scores.load(path, other)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"samples": 0}, "samples"),
        ({"seq_len": 1}, "seq_len"),
        ({"aggregation": "max"}, "aggregation"),
        ({"depth_method": "cos"}, "depth method"),
    ],
)
def test_score_config_rejects_bad_settings(kw, msg):
    with pytest.raises(UserError, match=msg):
        ScoreConfig(**kw)
