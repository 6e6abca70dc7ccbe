"""Elastic masks: choice probabilities -> the prefix keep-vectors of every group.

For an axis row with probabilities ``p`` (K,) over its choices, each group of the row gets
``keep = p @ prefix`` where ``prefix`` (K, size) holds the 0/1 prefix mask of each choice
(per B/C, KV or expert group block). With one-hot ``p`` (the straight-through sample of
:func:`jaxprune.elastic.router.sample`) the keep vectors are exact 0/1 prefixes, so the
masked parent computes what the extracted child computes; with soft ``p`` they are the
expected masks, and gradients reach the router through them. The masks are values, not
shapes: one compiled step serves every budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.elastic.space import Axis, ElasticSpace
from jaxprune.pruning.masks import Mask

Probs = dict[str, jax.Array]  # axis name -> (rows, K)


def prefix_tables(space: ElasticSpace, axis: Axis) -> list[list[np.ndarray]]:
    """[row][group] (K, size) 0/1 keep masks of every choice."""
    out = []
    for r in range(len(axis.rows)):
        tabs = []
        for j, (size, nb) in enumerate(zip(axis.sizes[r], axis.blocks[r])):
            t = np.zeros((axis.n_choices, size), np.float32)
            for c in range(axis.n_choices):
                if axis.name == "depth":
                    t[c] = 1.0
                    t[c, list(space.depth_order[: axis.widths[r][c][0]])] = 0.0
                    continue
                per, w = size // nb, axis.widths[r][c][j]
                for b in range(nb):
                    t[c, b * per : b * per + w] = 1.0
            tabs.append(t)
        out.append(tabs)
    return out


def keep_vectors(space: ElasticSpace, probs: Probs) -> dict[str, jax.Array]:
    """{group: (size,) keep vector} for choice probabilities ``probs``."""
    keep = {}
    for a in space.axes:
        p = probs[a.name]
        for r, tabs in enumerate(prefix_tables(space, a)):
            for g, t in zip(a.rows[r], tabs):
                keep[g] = p[r].astype(jnp.float32) @ jnp.asarray(t)
    return keep


def elastic_mask(base: Mask, space: ElasticSpace, probs: Probs) -> Mask:
    """``base`` (e.g. ``full_mask(parent)``) with the elastic groups' keep vectors."""
    return Mask({**base.keep, **keep_vectors(space, probs)}, base.groups, base.config)


def one_hot(space: ElasticSpace, choices: dict) -> Probs:
    """Hard ``choices`` {axis: (rows,) int} as one-hot probabilities."""
    return {
        a.name: jax.nn.one_hot(jnp.asarray(choices[a.name]).reshape(-1), a.n_choices)
        for a in space.axes
    }
