"""One numbering for layers: per-block targets, ``blocks.<i>.`` parameter paths, error
messages and export refusals name the same block index (Llama-family messages add the HF
decoder layer); a per-block target on the wrong kind of block names the blocks it fits."""

import re

import numpy as np
import pytest

from jaxprune.converters.api import export
from jaxprune.errors import UserError
from jaxprune.layers import block_label, blocks_of, hf_layer
from jaxprune.nn.model import init_model
from jaxprune.nn.state import model_params
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.prune import prune
from jaxprune.pruning.targets import validate_targets
from jaxprune.testing.configs import compress_config, hybrid_config, llama_config


def _mlp_blocks_by_params(model) -> list[int]:
    """Block indices whose ``blocks.<i>.mixer`` holds MLP weights (from the parameter paths)."""
    paths = model_params(model)
    return sorted(
        int(p.split(".")[1])
        for p in paths
        if p.startswith("blocks.") and p.endswith("mixer.up_proj") and "experts" not in p
    )


def _scores(model) -> dict:
    """Deterministic scores for every group the targets below touch."""
    out = {"hidden": np.arange(model.config.hidden, dtype=np.float32)}
    for i, layer in enumerate(model.config.layers):
        if layer.kind == "mlp":
            out[f"blocks.{i}.mlp"] = np.arange(layer.intermediate, dtype=np.float32)
    return out


def test_wrong_kind_names_the_block_its_kind_and_where_the_target_applies():
    cfg = compress_config()
    mamba = blocks_of(cfg, ("mamba2",))[0]
    mlps = blocks_of(cfg, ("mlp",))
    assert mlps == _mlp_blocks_by_params(init_model(cfg, 0))
    with pytest.raises(UserError) as e:
        validate_targets(cfg, {f"blocks.{mamba}.intermediate_size": 8})
    msg = str(e.value)
    assert "\n" not in msg
    assert f"block {mamba} (mamba2) is not a mlp block" in msg
    assert f"intermediate_size applies to mlp blocks ({', '.join(map(str, mlps))})" in msg


def test_wrong_kind_on_a_llama_names_the_hf_decoder_layer_too():
    cfg = llama_config()
    with pytest.raises(UserError, match=re.escape(
        "target blocks.2.intermediate_size: block 2 (attention, HF decoder layer 1) is not a "
        "mlp block; intermediate_size applies to mlp blocks (1, 3)"
    )):  # fmt: skip
        validate_targets(cfg, {"blocks.2.intermediate_size": 8})
    with pytest.raises(UserError, match="applies to attention blocks"):
        validate_targets(cfg, {"blocks.1.num_attention_heads": 2})


def test_a_target_for_a_kind_the_model_lacks_says_which_kind():
    with pytest.raises(UserError, match=r"no mamba2 blocks \('\*-\*-'\)"):
        validate_targets(llama_config(), {"mamba_num_heads": 2})
    with pytest.raises(UserError, match=re.escape(
        "block 0 (mamba2) is not a moe block; n_routed_experts applies to moe blocks (3)"
    )):  # fmt: skip
        validate_targets(hybrid_config(), {"blocks.0.n_routed_experts": 2})
    with pytest.raises(UserError, match=r"applies to moe blocks \(none in this model\)"):
        validate_targets(llama_config(), {"blocks.0.n_routed_experts": 2})


def test_block_out_of_range_and_drop_layers_name_their_numbering():
    cfg = llama_config()
    with pytest.raises(UserError, match=r"block 9 does not exist \(blocks 0\.\.3\)"):
        validate_targets(cfg, {"blocks.9.intermediate_size": 8})
    with pytest.raises(UserError, match=r"layer 2 does not exist \(0\.\.1; HF decoder layers"):
        validate_targets(cfg, {"drop_layers": [2]})
    with pytest.raises(UserError, match=r"layer 4 does not exist \(0\.\.3; blocks\)"):
        validate_targets(compress_config(), {"drop_layers": [4]})


def test_a_value_error_on_one_block_names_that_block():
    cfg = llama_config()
    with pytest.raises(UserError, match=r"blocks\.3\.intermediate_size \(block 3 \(mlp, HF "
                       r"decoder layer 1\)\): .*larger than the source"):  # fmt: skip
        validate_targets(cfg, {"blocks.3.intermediate_size": 99})


def test_drop_layers_on_a_llama_removes_the_named_decoder_layer_pair():
    model = init_model(llama_config(), 0)
    small = prune(model, {"depth_block_influence": np.ones(4)}, {"drop_layers": [1]})
    assert small.config.pattern == "*-"
    kept = materialize(model, {"depth": np.array([0, 1])})
    np.testing.assert_array_equal(
        model_params(small)["blocks.1.mixer.up_proj"], model_params(kept)["blocks.1.mixer.up_proj"]
    )


def test_export_refusal_names_the_block_of_the_parameter_path(tmp_path):
    model = init_model(llama_config(), 0)
    small = prune(model, _scores(model), {"blocks.3.intermediate_size": 9})
    widths = {p: a.shape for p, a in model_params(small).items() if p.endswith("mixer.up_proj")}
    narrow = [p for p, s in widths.items() if 9 in s]
    assert narrow == ["blocks.3.mixer.up_proj"]
    with pytest.raises(UserError) as e:
        export(small, tmp_path / "hf", model_type="llama")
    assert "layers 1 (mlp = block 3, differs from layer 0 = block 1)" in str(e.value)
    assert not (tmp_path / "hf").exists()


def test_group_errors_name_the_block_of_the_parameter_path():
    cfg = compress_config()
    attn = blocks_of(cfg, ("attention",))[0]
    model = init_model(cfg, 0)
    with pytest.raises(UserError, match=rf"^{re.escape(block_label(cfg, attn))}: kept heads"):
        materialize(model, {f"blocks.{attn}.heads": np.array([0, 1])})  # both in group 0


def test_block_label_and_hf_layer_agree():
    cfg = llama_config()
    assert [hf_layer(cfg, i) for i in range(4)] == [0, 0, 1, 1]
    assert block_label(cfg, 1) == "block 1 (mlp, HF decoder layer 0)"
    hyb = compress_config()
    assert [hf_layer(hyb, i) for i in range(len(hyb.layers))] == list(range(len(hyb.layers)))
