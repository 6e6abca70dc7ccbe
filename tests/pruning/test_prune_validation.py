"""prune() and validate_targets reject unknown keys and non-integer values, naming the
close match, instead of pruning nothing."""

import numpy as np
import pytest

from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.pruning.prune import prune
from jaxprune.pruning.targets import parse_targets, validate_targets
from jaxprune.testing.configs import compress_config

CFG = compress_config()


@pytest.mark.parametrize(
    "targets, message",
    [
        ({"hiden_size": 16}, r"unknown target 'hiden_size' \(did you mean 'hidden_size'\?\)"),
        ({"blocks.1.intermediate_sise": 8}, r"did you mean 'blocks\.1\.intermediate_size'"),
        ({"blocks.x.intermediate_size": 8}, "unknown target 'blocks.x.intermediate_size'"),
        ({"colour": 3}, r"unknown target 'colour'; known: hidden_size"),
        ({"hidden_size": 16.0}, "hidden_size: 16.0 is not an integer"),
        ({"hidden_size": True}, "is not an integer"),
        ({"drop_layers": 1}, "must be a list of layer indices"),
        ({"drop_layers": [0, "1"]}, "is not an integer"),
    ],
)
def test_validate_targets_rejects_unknown_keys_and_bad_values(targets, message):
    with pytest.raises(UserError, match=message):
        validate_targets(CFG, targets)


def test_prune_rejects_an_unknown_key_instead_of_pruning_nothing():
    model = init_model(CFG, 0)
    scores = {"hidden": np.arange(CFG.hidden, dtype=np.float32)}
    with pytest.raises(UserError, match="did you mean 'hidden_size'"):
        prune(model, scores, {"hiden_size": 16})
    assert prune(model, scores, {"hidden_size": 16}).config.hidden == 16


def test_parse_targets_suggests_the_close_key():
    with pytest.raises(UserError, match=r"did you mean 'mamba_num_heads'"):
        parse_targets("mamba_num_head=2")
    assert parse_targets("blocks.2.intermediate_size=8") == {"blocks.2.intermediate_size": 8}
