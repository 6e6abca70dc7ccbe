"""MiniPuzzle-style targets: ``num_<kind>_layers`` keeps the best-ranked blocks of each kind,
kinds independently, and bad combinations are refused before any work."""

import numpy as np
import pytest

from jaxprune.errors import UserError
from jaxprune.pruning.prune import plan
from jaxprune.pruning.targets import parse_targets, validate_targets
from jaxprune.testing.configs import PRUNING_CFG as CFG  # "M-*EM-*E"
from jaxprune.testing.configs import llama_config


def test_each_kind_keeps_its_best_ranked_blocks():
    depth = np.array([5.0, 1.0, 0.5, 3.0, 2.0, 4.0, 0.7, 9.0])  # low = dropped first
    scores = {"depth_block_influence": depth}
    t = parse_targets("num_mamba_layers=1,num_mlp_layers=1,num_attention_layers=1")
    kept = plan(CFG, scores, t)["depth"].tolist()
    # Mamba 0 (5.0) beats 4 (2.0); MLP 5 (4.0) beats 1 (1.0); attention 6 (0.7) beats 2 (0.5);
    # MoE blocks 3 and 7 are untouched
    assert kept == [0, 3, 5, 6, 7]


@pytest.mark.parametrize(
    "cfg, text, message",
    [
        (CFG, "num_mamba_layers=3", "has 2 such blocks"),
        (CFG, "num_mlp_layers=1,num_hidden_layers=6", "not both"),
        (CFG, "num_attention_layers=1,drop_layers=0", "not both"),
        (llama_config(), "num_mlp_layers=1", "Nemotron-H-style"),
    ],
)
def test_bad_kind_counts_are_refused(cfg, text, message):
    with pytest.raises(UserError, match=message):
        validate_targets(cfg, parse_targets(text))
