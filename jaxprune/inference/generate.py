"""Prefill + jitted decode loop over the model's caches.

Batches of prompts of different lengths are left-padded (see ``jaxprune.inference.text.
left_pad``) and passed with ``offset`` (b,) = the padding of each row: attention never
sees padded keys, Mamba2 zeroes the padded positions and RoPE counts real tokens only, so
every row continues exactly as it would alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.errors import UserError
from jaxprune.inference.sampling import sample
from jaxprune.nn.cache import Cache
from jaxprune.nn.model import HybridLM

Picker = Callable[[jax.Array, jax.Array], jax.Array]


def make_picker(
    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None
) -> Picker:
    """``pick(logits (b, V), key) -> tokens (b,)`` for the given sampling rule."""
    if temperature < 0:
        raise UserError(f"generate: temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"generate: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"generate: top_p must be in (0, 1], got {top_p}")
    return partial(sample, temperature=temperature, top_k=top_k, top_p=top_p)


def prefill(
    model: HybridLM, prompt: jax.Array, cache: Cache, key: jax.Array, pick: Picker
) -> tuple[jax.Array, Cache]:
    """Run the prompt (b, T0) through ``cache``; return the first new token (b,) and the
    filled cache. Traceable; jit it (see :func:`make_generate`, ``stream.Decoder``)."""
    logits, cache = model.step(prompt, cache)
    return pick(logits[:, -1], key), cache


def decode_step(
    model: HybridLM, tok: jax.Array, cache: Cache, key: jax.Array, pick: Picker
) -> tuple[jax.Array, Cache]:
    """Feed the last token (b,) and return the next one (b,) and the updated cache."""
    logits, cache = model.step(tok[:, None], cache)
    return pick(logits[:, -1], key), cache


def decode_loop(
    model: HybridLM, tok: jax.Array, cache: Cache, keys: jax.Array, pick: Picker
) -> tuple[jax.Array, Cache]:
    """``len(keys)`` decode steps as one ``lax.scan`` after ``tok`` (b,).

    Returns the new tokens (b, len(keys)) int32 and the cache."""

    def body(carry, k):
        t, c = carry
        nxt, c = decode_step(model, t, c, k, pick)
        return (nxt, c), nxt

    (_, cache), rest = jax.lax.scan(body, (tok, cache), keys)
    return rest.T, cache


def make_generate(
    model: HybridLM,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cache_dtype=None,
) -> Callable[..., jax.Array]:
    """A jitted ``fn(state, prompt, key, offset=None) -> tokens`` for
    ``state = nnx.split(model)[1]``.

    prompt (b, T0) int32 -> (b, max_new_tokens) int32 new tokens; ``offset`` (b,) int32 is
    the left padding of each prompt row (None: no padding). One compile per prompt shape;
    the decode loop is a ``lax.scan``.
    """
    if max_new_tokens < 1:
        raise UserError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    graphdef = nnx.graphdef(model)
    pick = make_picker(temperature, top_k, top_p)

    @jax.jit
    def run(
        state: nnx.State, prompt: jax.Array, key: jax.Array, offset: jax.Array | None = None
    ) -> jax.Array:
        m = nnx.merge(graphdef, state)
        b, t0 = prompt.shape
        cache = m.init_cache(b, t0 + max_new_tokens, cache_dtype, offset=offset)
        keys = jax.random.split(key, max_new_tokens)
        first, cache = prefill(m, prompt, cache, keys[0], pick)
        rest, _ = decode_loop(m, first, cache, keys[1:], pick)
        return jnp.concatenate([first[:, None], rest], axis=1)

    return run


def generate(
    model: HybridLM,
    prompt: jax.Array,
    max_new_tokens: int,
    *,
    key: jax.Array | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    offset: jax.Array | None = None,
) -> jax.Array:
    """Greedy (``temperature=0``) or sampled continuation of ``prompt`` (b, T0) int, left
    padded by ``offset`` (b,) tokens per row when given.

    Returns (b, max_new_tokens) int32. Compiles on every call; keep the function from
    :func:`make_generate` to reuse the compilation.
    """
    fn = make_generate(model, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    key = jax.random.key(0) if key is None else key
    if offset is not None:
        offset = jnp.asarray(offset, jnp.int32)
    return fn(nnx.state(model), jnp.asarray(prompt, jnp.int32), key, offset)
