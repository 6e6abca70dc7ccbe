"""The baseline DMC is measured against: fewer KV heads (GQA up-training, Ainslie et al.,
arXiv 2305.13245). :func:`pool_kv_heads` mean-pools each run of adjacent KV heads into one
(k/v projections and biases), keeping every query head; the result is then up-trained."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprune.config import AttentionConfig
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.nn.state import model_from_params, model_params


def pool_kv_heads(model: HybridLM, factor: int) -> HybridLM:
    """A new model whose attention blocks keep 1/``factor`` of their KV heads, each the mean
    of ``factor`` adjacent ones (query heads keep their order, so each still reads the
    pooled head of its old group). UserError when a block's KV heads do not divide."""
    if factor < 1:
        raise UserError(f"gqa: factor must be >= 1, got {factor}")
    cfg = model.config
    params = dict(model_params(model))
    layers = list(cfg.layers)
    for i, layer in enumerate(cfg.layers):
        if not isinstance(layer, AttentionConfig):
            continue
        if layer.num_kv_heads % factor:
            raise UserError(
                f"gqa: block {i} has {layer.num_kv_heads} KV heads, not divisible by {factor}"
            )
        new = layer.num_kv_heads // factor
        layers[i] = dataclasses.replace(layer, num_kv_heads=new)
        for name, axis in (("k_proj", 1), ("v_proj", 1), ("k_bias", 0), ("v_bias", 0)):
            key = f"blocks.{i}.mixer.{name}"
            if key in params:
                w = np.asarray(params[key])
                shape = w.shape[:axis] + (new, factor) + w.shape[axis + 1 :]
                params[key] = w.reshape(shape).mean(axis=axis + 1)
    return model_from_params(cfg.replace(layers=tuple(layers)), params)
