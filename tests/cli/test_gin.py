"""gin bindings either apply or fail; nested configs left to their defaults are built by gin."""

import pytest

from jaxprune.cli.gin import config_from_gin, train_config_from_gin
from jaxprune.errors import UserError
from jaxprune.pipeline import CompressConfig


def test_a_binding_of_a_nested_default_config_applies():
    cfg = train_config_from_gin([], ["OptimConfig.lr = 0.5", "LossConfig.temperature = 2.0"])
    assert cfg.optim.lr == 0.5 and cfg.loss.temperature == 2.0


def test_an_explicitly_bound_nested_config_is_kept():
    cfg = train_config_from_gin(
        [], ["TrainConfig.optim = @fast/OptimConfig()", "fast/OptimConfig.lr = 0.25"]
    )
    assert cfg.optim.lr == 0.25


def test_a_binding_that_reaches_nothing_is_an_error():
    with pytest.raises(UserError, match="reaches nothing"):
        train_config_from_gin([], ["ScoreConfig.samples = 3"])  # no ScoreConfig in a run
    with pytest.raises(UserError, match="distill/OptimConfig.lr"):
        train_config_from_gin([], ["distill/OptimConfig.lr = 0.1"])  # scope never entered


def test_compress_nests_calibration_and_search():
    base = ['CompressConfig.model = "m"', 'CompressConfig.data = "d"', 'CompressConfig.out = "o"']
    cfg = config_from_gin(
        [],
        [
            *base,
            "CompressConfig.search = @SearchConfig()",
            "SearchConfig.params = 0.6",
            "SearchConfig.memory_gb = 2.0",
            "SearchConfig.distill_steps = 5",
            'ScoreConfig.aggregation = "mean"',
            'ScoreConfig.depth_method = "nmse"',
        ],
        CompressConfig,
    )
    assert cfg.search.params == 0.6 and cfg.search.memory_gb == 2.0
    assert cfg.search.distill_steps == 5
    assert cfg.calibration.aggregation == "mean" and cfg.calibration.depth_key == "depth_nmse"


def test_bad_gin_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="gin file not found"):
        train_config_from_gin([str(tmp_path / "missing.gin")], [])
    with pytest.raises(UserError, match="gin config"):
        train_config_from_gin([], ["TrainConfig.stepz = 3"])
    with pytest.raises(UserError, match="gin config"):
        train_config_from_gin([], ["TrainConfig.steps = 0"])  # fails validation
