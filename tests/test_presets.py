"""The built-in presets: sizes as documented, counted both from the config and the model."""

import pytest

from jaxprune.counts import count_leaves, count_params
from jaxprune.nn.model import abstract_model
from jaxprune.presets import get_preset


@pytest.mark.parametrize(
    "name,low,high", [("bench-10m", 10e6, 11e6), ("nemotron-h-1b", 0.9e9, 1.0e9)]
)
def test_preset_parameter_count(name, low, high):
    cfg = get_preset(name)
    total = count_params(cfg)["total"]
    assert low <= total < high, total
    assert count_leaves(abstract_model(cfg)) == total  # the formula matches the built model


def test_one_billion_preset_is_nemotron_h_shaped():
    cfg = get_preset("nemotron-h-1b")
    assert cfg.pattern == "M-M-M*-" * 4 and not cfg.tie_embeddings
    mamba = cfg.layers[0]
    assert (mamba.head_dim, mamba.state, mamba.chunk_size) == (64, 128, 128)  # the 8B's
