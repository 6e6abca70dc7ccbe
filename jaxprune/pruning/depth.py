"""Depth importance beyond block influence: LM-loss increase when a block is dropped, and
the iterative normalized-MSE ranking of Nemotron Elastic. Both run the masked model with a
depth mask, so one compilation serves every candidate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.nn.model import HybridLM
from jaxprune.ops.loss import token_nll
from jaxprune.pruning.masks import Mask, full_mask, masked_forward


def _with_depth(mask: Mask, keep: np.ndarray) -> Mask:
    return Mask({**mask.keep, "depth": jnp.asarray(keep, jnp.float32)}, mask.groups, mask.config)


@jax.jit
def _loss(model, mask, tokens):
    return jnp.mean(token_nll(masked_forward(model, mask, tokens[:, :-1]), tokens[:, 1:]))


@jax.jit
def _nmse(model, mask, tokens, ref):
    z = masked_forward(model, mask, tokens)
    return jnp.sum((z - ref) ** 2) / jnp.maximum(jnp.sum(ref**2), 1e-12)


def loss_increase(model: HybridLM, batches: list[np.ndarray]) -> np.ndarray:
    """(L,) mean LM-loss increase when each block alone is dropped (higher = keep)."""
    mask = full_mask(model)
    n = len(model.config.layers)

    def loss(keep: np.ndarray) -> float:
        m = _with_depth(mask, keep)
        return float(np.mean([_loss(model, m, jnp.asarray(b)) for b in batches]))

    base = loss(np.ones(n))
    return np.array([loss(np.eye(n)[i] == 0) - base for i in range(n)])


def iterative_nmse(model: HybridLM, batches: list[np.ndarray]) -> np.ndarray:
    """(L,) scores from greedy removal: repeatedly drop the block whose removal changes the
    full model's logits least (normalized MSE); the first removed gets the lowest score."""
    mask = full_mask(model)
    n = len(model.config.layers)
    refs = [np.asarray(jax.jit(lambda m, t: m(t))(model, jnp.asarray(b))) for b in batches]
    keep = np.ones(n)
    score = np.zeros(n)
    for rank in range(n - 1):
        best, best_err = -1, np.inf
        for i in np.flatnonzero(keep):
            trial = keep.copy()
            trial[i] = 0
            m = _with_depth(mask, trial)
            err = float(
                np.mean(
                    [_nmse(model, m, jnp.asarray(b), r) for b, r in zip(batches, refs, strict=True)]
                )
            )
            if err < best_err:
                best, best_err = i, err
        keep[best] = 0
        score[best] = rank
    score[np.flatnonzero(keep)] = n - 1
    return score
