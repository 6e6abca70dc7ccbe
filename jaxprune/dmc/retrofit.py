"""Turn attention blocks into DMC blocks: the config change and the neuron surgery.

:func:`retrofit` is the start of a DMC retrofit (the paper's init): the chosen attention
blocks get a :class:`~jaxprune.config.DMCConfig` and the q/k weights (and biases) of the
repurposed last head dimension are zeroed in every head, so alpha = sigmoid(-c) ~ 0 (every
token appends) and omega = sigmoid(c) ~ 1: the DMC model starts as the plain model with
that dimension removed, and retraining teaches the dimension to decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxprune.config import AttentionConfig, DMCConfig, ModelConfig
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.nn.state import model_from_params, model_params


def attention_blocks(cfg: ModelConfig) -> tuple[int, ...]:
    """Indices of the attention blocks of ``cfg``."""
    return tuple(i for i, layer in enumerate(cfg.layers) if isinstance(layer, AttentionConfig))


def dmc_blocks(cfg: ModelConfig) -> tuple[int, ...]:
    """Indices of the DMC attention blocks of ``cfg``."""
    return tuple(i for i in attention_blocks(cfg) if cfg.layers[i].dmc is not None)


def with_dmc(
    cfg: ModelConfig, dmc: DMCConfig | None, blocks: Sequence[int] | None = None
) -> ModelConfig:
    """``cfg`` with ``dmc`` set on the attention ``blocks`` (default: all of them; None as
    ``dmc`` makes them plain again). UserError for a block that is not attention."""
    attn = attention_blocks(cfg)
    if not attn:
        raise UserError("dmc: the model has no attention block to compress")
    chosen = attn if blocks is None else tuple(blocks)
    bad = [i for i in chosen if i not in attn]
    if bad:
        raise UserError(f"dmc: blocks {bad} are not attention blocks (those are {list(attn)})")
    layers = list(cfg.layers)
    for i in chosen:
        layers[i] = dataclasses.replace(layers[i], dmc=dmc)
    return cfg.replace(layers=tuple(layers))


def retrofit(
    model: HybridLM, dmc: DMCConfig | None = None, blocks: Sequence[int] | None = None
) -> HybridLM:
    """A new model: ``model`` with DMC on ``blocks`` (default all attention blocks) and the
    last head dimension of their q/k projections (and q/k biases) zeroed. ``model`` is not
    changed."""
    cfg = with_dmc(model.config, dmc or DMCConfig(), blocks)
    params = dict(model_params(model))
    for i in dmc_blocks(cfg):
        for name in ("q_proj", "k_proj", "q_bias", "k_bias"):
            key = f"blocks.{i}.mixer.{name}"
            if key in params:
                w = np.array(params[key])
                w[..., -1] = 0
                params[key] = w
    return model_from_params(cfg, params)
