"""Next-token accuracy and agreement with a parent model: MiniPuzzle's ranking metrics.

Accuracy: the fraction of predicted positions where the model's top-1 token is the next
token. Agreement: the fraction where its top-1 token is the parent's top-1 token (how much
of the parent's behaviour a pruned candidate keeps, independent of the data's noise).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.data.rows import check_rows
from jaxprune.evaluation.lm_loss import padded_batch
from jaxprune.nn.model import HybridLM
from jaxprune.ops.loss import token_nll


@functools.lru_cache(maxsize=16)
def _sums_fn(graphdef: nnx.GraphDef):
    """Jitted ``fn(state, tokens (b, T), mask (b,), parent (b, T) int) -> (nll sum, correct,
    agreeing, count, top-1 (b, T))``; position i predicts token i + 1."""

    @jax.jit
    def sums(state, tokens, mask, parent):
        b, t = tokens.shape
        logits = nnx.merge(graphdef, state)(tokens)
        targets = jnp.concatenate([tokens[:, 1:], jnp.zeros((b, 1), tokens.dtype)], axis=1)
        top = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        valid = mask[:, None] & (jnp.arange(t) < t - 1)[None, :]

        def count(x):
            return jnp.sum(jnp.where(valid, x, 0), dtype=jnp.int32)

        nll = jnp.sum(jnp.where(valid, token_nll(logits, targets), 0.0))
        return nll, count(top == targets), count(top == parent), count(True), top

    return sums


def next_token_metrics(
    model: HybridLM,
    rows: np.ndarray,
    *,
    parent_top: np.ndarray | None = None,
    batch_size: int = 8,
) -> dict:
    """Over token rows (N, T): ``loss`` (mean next-token NLL, nats), ``accuracy``,
    ``agreement`` with ``parent_top`` (N, T) (the parent's top-1 tokens, from this function
    run on the parent; NaN without it), ``tokens`` and ``top`` (N, T) int32, this model's
    top-1 token at each position (the last column predicts past the row)."""
    rows = check_rows(rows, model.config.vocab_size)
    n, t = rows.shape
    if parent_top is not None and np.shape(parent_top) != (n, t):
        raise ValueError(f"parent_top has shape {np.shape(parent_top)}, rows {(n, t)}")
    b = min(int(batch_size), n)
    graphdef, state = nnx.split(model)
    fn = _sums_fn(graphdef)
    totals = np.zeros(4, np.float64)
    tops = []
    ref = np.zeros((n, t), np.int32) if parent_top is None else np.asarray(parent_top, np.int32)
    for start in range(0, n, b):
        tokens, mask = padded_batch(rows, start, b)
        parent, _ = padded_batch(ref, start, b)
        *s, top = jax.device_get(fn(state, tokens, mask, parent))
        totals += np.asarray(s, np.float64)
        tops.append(np.asarray(top)[: int(mask.sum())])
    nll, correct, agree, count = totals
    return {
        "loss": float(nll / count),
        "accuracy": float(correct / count),
        "agreement": float(agree / count) if parent_top is not None else float("nan"),
        "tokens": int(count),
        "top": np.concatenate(tops),
    }
