"""How much a DMC model compresses its KV cache on given text.

:func:`kv_compression` runs the model's parallel (hard-decision) form over token rows and
counts, per DMC block and KV head, the tokens seen and the cache slots they occupy (one
slot per append; a merge adds none). The training form with hard decisions is the
token-by-token cache's computation, so these counts are the slots a generation over the
same text would fill (``tests/dmc`` checks it). :func:`cache_compression` reads the
same figures, and the bytes, off a cache that generation filled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.data.rows import check_rows
from jaxprune.dmc.retrofit import dmc_blocks
from jaxprune.errors import UserError
from jaxprune.evaluation.lm_loss import padded_batch
from jaxprune.nn.cache import Cache, DMCCache
from jaxprune.nn.model import HybridLM
from jaxprune.nn.taps import DMCDecisions


@functools.lru_cache(maxsize=8)
def _counts_fn(graphdef: nnx.GraphDef):
    """jitted ``fn(state, tokens (b,T), mask (b,)) -> {block: (tokens, slots (Hkv,))}``."""

    @jax.jit
    def counts(state, tokens, mask):
        records: list[DMCDecisions] = []

        def tap(r) -> None:
            if isinstance(r, DMCDecisions):
                records.append(r)

        nnx.merge(graphdef, state).hidden_states(tokens, tap=tap)
        out = {}
        for r in records:
            real = r.real & mask[:, None]  # (b, T)
            appends = (1.0 - r.alpha) * real[..., None]  # (b, T, Hkv)
            out[r.block] = (jnp.sum(real, dtype=jnp.int32), jnp.sum(appends, axis=(0, 1)))
        return out

    return counts


def kv_compression(model: HybridLM, rows: np.ndarray, *, batch_size: int = 8) -> dict:
    """KV-cache compression of ``model`` over token rows (n, T): ``ratio`` (all DMC
    blocks and heads: tokens x heads / slots), ``tokens``, ``slots`` and per block
    ``{"ratio", "slots", "heads": [ratio per KV head]}`` keyed by the block index (str).
    UserError when the model has no DMC block."""
    blocks = dmc_blocks(model.config)
    if not blocks:
        raise UserError("kv compression: the model has no DMC attention block")
    rows = check_rows(rows, model.config.vocab_size)
    b = min(int(batch_size), len(rows))
    graphdef, state = nnx.split(model)
    fn = _counts_fn(graphdef)
    tokens = {i: 0 for i in blocks}
    slots = {i: np.zeros(model.config.layers[i].num_kv_heads) for i in blocks}
    for start in range(0, len(rows), b):
        batch, mask = padded_batch(rows, start, b)
        for i, (n, s) in jax.device_get(fn(state, batch, mask)).items():
            tokens[i] += int(n)
            slots[i] += np.asarray(s, np.float64)
    per_block = {
        str(i): {
            "ratio": float(tokens[i] * len(slots[i]) / slots[i].sum()),
            "slots": int(round(slots[i].sum())),
            "heads": [float(tokens[i] / s) for s in slots[i]],
        }
        for i in blocks
    }
    total_slots = sum(s.sum() for s in slots.values())
    heads_tokens = sum(tokens[i] * len(slots[i]) for i in blocks)
    return {
        "ratio": float(heads_tokens / total_slots),
        "tokens": int(tokens[blocks[0]]),
        "slots": int(round(total_slots)),
        "blocks": per_block,
    }


def cache_compression(cache: Cache) -> dict | None:
    """The compression a filled cache achieved (None: no DMC block in it): per DMC block
    (keyed by its index, str) the tokens per used slot of each KV head (over all rows),
    its ``ratio`` (over heads), the ``used_bytes`` of the valid slots and the
    ``plain_bytes`` an ordinary KV cache needs for the same tokens; and the totals."""
    pos = int(np.asarray(cache.pos))
    off = np.zeros(1, np.int64) if cache.offset is None else np.asarray(cache.offset, np.int64)
    blocks, used, plain, slots_all, toks_all = {}, 0, 0, 0, 0
    for i, c in enumerate(cache.layers):
        if not isinstance(c, DMCCache):
            continue
        length = np.asarray(c.length, np.int64)  # (b, Hkv)
        tokens = np.broadcast_to(pos - off, length.shape[:1]).sum()  # real tokens, all rows
        per_slot = 2 * c.k.shape[-1] * c.k.dtype.itemsize
        slots = length.sum(axis=0)  # (Hkv,)
        blocks[str(i)] = {
            "ratio": float(tokens * len(slots) / max(slots.sum(), 1)),
            "heads": [float(tokens / max(s, 1)) for s in slots],
            "used_bytes": int(slots.sum() * per_slot),
            "plain_bytes": int(tokens * len(slots) * per_slot),
        }
        used += blocks[str(i)]["used_bytes"]
        plain += blocks[str(i)]["plain_bytes"]
        slots_all += int(slots.sum())
        toks_all += int(tokens * len(slots))
    if not blocks:
        return None
    return {
        "ratio": toks_all / max(slots_all, 1),
        "used_bytes": used,
        "plain_bytes": plain,
        "blocks": blocks,
    }
