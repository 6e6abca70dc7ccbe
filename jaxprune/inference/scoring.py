"""Batched continuation scoring: summed log-probabilities of the last tokens of each row."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.inference.text import round_up
from jaxprune.nn.model import HybridLM
from jaxprune.ops.loss import token_nll


@functools.lru_cache(maxsize=8)
def make_score_fn(graphdef: nnx.GraphDef):
    """A jitted ``fn(state, tokens, weight) -> (logp (b,), greedy (b,))``.

    tokens (b, T) int32 right-padded; weight (b, T) bool marks the positions t whose token
    is scored given tokens[:t]. logp sums log p(tokens[t] | tokens[:t]) over them (fp32);
    greedy says whether each scored token is the argmax. Right padding never reaches a
    scored position (the model is causal).
    """

    @jax.jit
    def score(state: nnx.State, tokens: jax.Array, weight: jax.Array):
        logits = nnx.merge(graphdef, state)(tokens[:, :-1])
        targets, w = tokens[:, 1:], weight[:, 1:]
        logp = -token_nll(logits, targets)
        hit = jnp.argmax(logits, axis=-1) == targets
        return jnp.sum(jnp.where(w, logp, 0.0), axis=1), jnp.all(hit | ~w, axis=1)

    return score


def score_batches(
    model: HybridLM,
    rows: Sequence[tuple[Sequence[int], int]],
    *,
    batch_size: int = 8,
    bucket: int = 64,
) -> list[tuple[float, bool]]:
    """rows: (token ids, n) pairs; score the last n tokens of each given the ones before.

    Rows are sorted by length and batched ``batch_size`` at a time, right-padded to a
    multiple of ``bucket`` (the batch dimension is padded too), so that few shapes compile.
    Returns (summed log-probability, all greedy) per row, in the input order.
    """
    graphdef, state = nnx.split(model)
    fn = make_score_fn(graphdef)
    for ids, n in rows:
        if not 0 <= n < len(ids):
            raise ValueError(f"score: need 0 <= continuation ({n}) < row length ({len(ids)})")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
    for s in range(0, len(order), batch_size):
        part = order[s : s + batch_size]
        t = round_up(max(len(rows[i][0]) for i in part), bucket) + 1
        tokens = np.zeros((batch_size, t), np.int32)
        weight = np.zeros((batch_size, t), bool)
        for r, i in enumerate(part):
            ids, n = rows[i]
            tokens[r, : len(ids)] = ids
            weight[r, len(ids) - n : len(ids)] = True
        logp, greedy = fn(state, tokens, weight)
        for r, i in enumerate(part):
            out[i] = (float(logp[r]), bool(greedy[r]))
    return out
