"""Language-model loss: mean next-token cross-entropy (nats) and perplexity over token rows."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxprune.data.rows import check_rows
from jaxprune.nn.model import HybridLM
from jaxprune.ops.loss import token_nll

NllFn = Callable[[nnx.State, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@functools.lru_cache(maxsize=16)
def make_nll_fn(graphdef: nnx.GraphDef) -> NllFn:
    """A jitted ``fn(state, tokens, mask) -> (sum_nll, count)`` for ``nnx.split(model)``.

    Cached per graphdef, so repeated evaluations of one architecture (e.g. pruning
    candidates of equal shapes) reuse the compiled function.

    tokens (b, T) int32, mask (b,) bool (False marks padding rows) -> the fp32 sum of the
    next-token negative log-likelihoods over the b * (T - 1) predicted positions of the
    unmasked rows, and their int32 count. Only one batch of logits (b, T, V) is ever live.
    """

    @jax.jit
    def nll_sums(state: nnx.State, tokens: jax.Array, mask: jax.Array):
        b, t = tokens.shape
        logits = nnx.merge(graphdef, state)(tokens)  # (b, T, V)
        # Position i predicts token i + 1; the last position has no target.
        targets = jnp.concatenate([tokens[:, 1:], jnp.zeros((b, 1), tokens.dtype)], axis=1)
        nll = token_nll(logits, targets)  # (b, T)
        valid = mask[:, None] & (jnp.arange(t) < t - 1)[None, :]
        total = jnp.sum(jnp.where(valid, nll, 0.0))
        return total, jnp.sum(valid, dtype=jnp.int32)

    return nll_sums


def evaluate_lm_loss(
    model: HybridLM,
    rows: np.ndarray,
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, float | int]:
    """Mean next-token cross-entropy of ``model`` on token rows (rows, T) int.

    Every row gives T - 1 predictions and the loss is the mean over all of them (a global
    token mean). Rows run in batches of ``batch_size`` with the last one padded and masked,
    so there is a single compile. Returns ``{"loss": nats, "ppl": exp(loss),
    "tokens": rows * (T - 1), "rows": rows}``.
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"lm loss: batch_size must be an integer >= 1, got {batch_size!r}")
    rows = check_rows(rows, model.config.vocab_size)
    n, t = rows.shape
    b = min(int(batch_size), n)  # no point padding past the data
    graphdef, state = nnx.split(model)
    fn = make_nll_fn(graphdef)

    total = np.float64(0.0)
    count = 0
    with tqdm(total=n, desc="eval", unit="row", disable=not progress) as bar:

        def consume(out: tuple[jax.Array, jax.Array], done: int) -> None:
            nonlocal total, count
            s, c = jax.device_get(out)
            total += np.float64(s)
            count += int(c)
            bar.update(done)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")

        pending = None
        for start in range(0, n, b):
            tokens, mask = padded_batch(rows, start, b)
            out = fn(state, tokens, mask)  # dispatched asynchronously
            if pending is not None:  # read the previous batch while this one runs
                consume(*pending)
            pending = (out, int(mask.sum()))
        consume(*pending)

    expected = n * (t - 1)
    if count != expected:  # the mask logic is the whole point of padding; never trust silently
        raise RuntimeError(f"lm loss: counted {count} predictions, expected {expected}")
    loss = float(total / count)
    return {"loss": loss, "ppl": _exp(loss), "tokens": count, "rows": n}


def padded_batch(rows: np.ndarray, start: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """rows[start:start + b] padded with token-0 rows to b: tokens (b, T) int32, mask (b,)."""
    chunk = rows[start : start + b]
    k = len(chunk)
    mask = np.arange(b) < k
    if k < b:
        chunk = np.concatenate([chunk, np.zeros((b - k, rows.shape[1]), rows.dtype)])
    return chunk, mask


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf
