"""Depth importance beyond block influence: LM-loss increase when a block is dropped, the
iterative normalized-MSE ranking of Nemotron Elastic and MiniPuzzle's last-hidden-state
MSE with one block removed. All run the masked model with a depth mask, so one compilation
serves every candidate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.nn.model import HybridLM
from jaxprune.ops.loss import token_nll
from jaxprune.pruning.masks import Mask, activation_masks, apply, full_mask, masked_forward


def _with_depth(mask: Mask, keep: np.ndarray) -> Mask:
    return Mask({**mask.keep, "depth": jnp.asarray(keep, jnp.float32)}, mask.groups, mask.config)


@jax.jit
def _loss(model, mask, tokens):
    return jnp.mean(token_nll(masked_forward(model, mask, tokens[:, :-1]), tokens[:, 1:]))


@jax.jit
def _nmse(model, mask, tokens, ref):
    z = masked_forward(model, mask, tokens)
    return jnp.sum((z - ref) ** 2) / jnp.maximum(jnp.sum(ref**2), 1e-12)


@jax.jit
def _final_hidden(model, mask, tokens):
    """The activation the LM head reads (after the final norm): (b, T, d) fp32."""
    masks = activation_masks(mask)
    m = apply(model, mask)
    h, _ = m.hidden_states(tokens, masks=masks)
    return m.final_norm(h, masks.get("hidden")).astype(jnp.float32)


@jax.jit
def _mse(model, mask, tokens, ref):
    return jnp.mean((_final_hidden(model, mask, tokens) - ref) ** 2)


def hidden_mse(model: HybridLM, batches: list[np.ndarray]) -> np.ndarray:
    """(L,) MiniPuzzle's layer importance: the mean squared difference of the activation
    before the LM head between the full model and the model with only that block removed
    (higher = keep)."""
    mask = full_mask(model)
    n = len(model.config.layers)
    tokens = [jnp.asarray(b) for b in batches]
    refs = [_final_hidden(model, mask, t) for t in tokens]
    out = np.zeros(n)
    for i in range(n):
        m = _with_depth(mask, np.eye(n)[i] == 0)
        out[i] = np.mean([float(_mse(model, m, t, r)) for t, r in zip(tokens, refs, strict=True)])
    return out


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
