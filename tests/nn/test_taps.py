"""Typed taps, explicit mixer keywords, the one block loop and mixer_class."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, MoEConfig
from jaxprune.nn import MLP, Attention, Block, HybridLM, Mamba2, MoE
from jaxprune.nn.model import mixer_class
from jaxprune.nn.taps import (
    BlockInput,
    BlockIO,
    ExpertHidden,
    ExpertOutputs,
    FinalHidden,
    HeadOutputs,
    MambaX,
    MLPHidden,
    Routing,
)
from tests.conftest import hybrid_config

# pattern "M-*EM-" (tests/conftest.py): what each kind of block reports besides its input
# and io; the E block's shared expert reports an MLPHidden with shared=True
PER_KIND = {
    "M": [MambaX],
    "-": [MLPHidden],
    "*": [HeadOutputs],
    "E": [Routing, ExpertHidden, ExpertOutputs, MLPHidden],
}


def _records(model, tokens):
    out = []
    model(tokens, tap=out.append)
    return out


@pytest.fixture(scope="module")
def run():
    cfg = hybrid_config()
    model = HybridLM(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, cfg.vocab_size)
    return cfg, model, tokens, _records(model, tokens)


def test_every_record_carries_its_block(run):
    cfg, _, _, records = run
    got = sorted((r.block, type(r).__name__) for r in records if not isinstance(r, FinalHidden))
    want = sorted(
        (i, t.__name__)
        for i, kind in enumerate(cfg.pattern)
        for t in [BlockInput, BlockIO, *PER_KIND[kind]]
    )
    assert got == want
    assert sum(isinstance(r, FinalHidden) for r in records) == 1
    shared = [r for r in records if isinstance(r, MLPHidden) and r.shared]
    assert [r.block for r in shared] == [3] and shared[0].h.shape == (2, 9, 13)
    heads = next(r for r in records if isinstance(r, HeadOutputs))
    assert heads.out.shape == (2, 9, 4, 6)
    experts = next(r for r in records if isinstance(r, ExpertOutputs))
    assert experts.y.shape == (2 * 9 * 2, 24) and experts.expert.shape == (36,)
    assert dataclasses.is_dataclass(experts)
    with pytest.raises(dataclasses.FrozenInstanceError):
        experts.block = 0


def test_block_io_chains_and_hidden_states_expose_the_loop(run):
    cfg, model, tokens, records = run
    io = {r.block: r for r in records if isinstance(r, BlockIO)}
    for i in range(1, len(cfg.layers)):
        np.testing.assert_array_equal(io[i].h_in, io[i - 1].h_out)
    h, outs = model.hidden_states(tokens, outputs=[0, 3])
    assert set(outs) == {0, 3}
    np.testing.assert_array_equal(outs[0], io[0].h_out)
    np.testing.assert_array_equal(outs[3], io[3].h_out)
    np.testing.assert_array_equal(h, io[len(cfg.layers) - 1].h_out)
    final = next(r for r in records if isinstance(r, FinalHidden))
    np.testing.assert_allclose(model.final_norm(h), final.h, rtol=1e-6)
    np.testing.assert_allclose(model.logits(h), model(tokens), rtol=1e-6, atol=1e-6)


def _mixers():
    rngs = nnx.Rngs(0)
    return {
        "attention": Attention(
            AttentionConfig(num_heads=2, num_kv_heads=1, head_dim=4), 8, rngs=rngs
        ),
        "mamba": Mamba2(Mamba2Config(num_heads=2, head_dim=4, state=3, chunk_size=4), 8, rngs=rngs),
        "mlp": MLP(MLPConfig(intermediate=5), 8, rngs=rngs),
        "moe": MoE(MoEConfig(num_experts=4, top_k=2, intermediate=3), 8, rngs=rngs),
    }


@pytest.mark.parametrize(
    "name,bad",
    [
        ("attention", {"segment_ids": None}),
        ("attention", {"mask": None}),
        ("mamba", {"positions": None}),
        ("mlp", {"mask": None}),
        ("mlp", {"seq_idx": None}),
        ("moe", {"cache": None}),
    ],
)
def test_mixers_reject_keywords_they_do_not_take(name, bad):
    x = jnp.ones((1, 3, 8))
    kw = {"positions": jnp.zeros((1, 3), jnp.int32)} if name == "attention" else {}
    mixer = _mixers()[name]
    mixer(x, **kw)  # the right keywords work
    with pytest.raises(TypeError, match="unexpected keyword"):
        mixer(x, **kw, **bad)


def test_block_rejects_a_misspelt_keyword_and_a_mask_its_mixer_cannot_use(hybrid_cfg):
    block = Block(hybrid_cfg.layers[1], hybrid_cfg, rngs=nnx.Rngs(0))  # an MLP block
    h, pos = jnp.ones((1, 3, 24)), jnp.zeros((1, 3), jnp.int32)
    with pytest.raises(TypeError, match="unexpected keyword"):
        block(h, positions=pos, segment_ids=pos)
    with pytest.raises(TypeError, match="takes no activation mask"):
        block(h, positions=pos, mask={"mixer": jnp.ones(29)})


def test_mixer_class_maps_configs_and_rejects_anything_else(hybrid_cfg):
    kinds = [mixer_class(layer) for layer in hybrid_cfg.layers]
    assert kinds == [Mamba2, MLP, Attention, MoE, Mamba2, MLP]
    for bad in ({"num_experts": 4}, None, hybrid_cfg):
        with pytest.raises(TypeError, match="unknown layer config"):
            mixer_class(bad)
