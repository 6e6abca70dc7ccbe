"""Prefill + jitted decode loop over the model's caches."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.inference.sampling import sample
from jaxprune.nn.model import HybridLM


def make_generate(
    model: HybridLM,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cache_dtype=None,
) -> Callable[[nnx.State, jax.Array, jax.Array], jax.Array]:
    """A jitted ``fn(state, prompt, key) -> tokens`` for ``state = nnx.split(model)[1]``.

    prompt (b, T0) int32 -> (b, max_new_tokens) int32 new tokens. One compile per prompt
    shape; the decode loop is a ``lax.scan``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    graphdef = nnx.graphdef(model)
    pick = partial(sample, temperature=temperature, top_k=top_k, top_p=top_p)

    @jax.jit
    def run(state: nnx.State, prompt: jax.Array, key: jax.Array) -> jax.Array:
        m = nnx.merge(graphdef, state)
        b, t0 = prompt.shape
        cache = m.init_cache(b, t0 + max_new_tokens, cache_dtype)
        logits, cache = m.step(prompt, cache)
        keys = jax.random.split(key, max_new_tokens)
        first = pick(logits[:, -1], keys[0])

        def body(carry, k):
            tok, cache = carry
            logits, cache = m.step(tok[:, None], cache)
            nxt = pick(logits[:, -1], k)
            return (nxt, cache), nxt

        _, rest = jax.lax.scan(body, (first, cache), keys[1:])
        return jnp.concatenate([first[:, None], rest.T], axis=1)

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
) -> jax.Array:
    """Greedy (``temperature=0``) or sampled continuation of ``prompt`` (b, T0) int.

    Returns (b, max_new_tokens) int32. Compiles on every call; keep the function from
    :func:`make_generate` to reuse the compilation.
    """
    fn = make_generate(model, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    key = jax.random.key(0) if key is None else key
    return fn(nnx.state(model), jnp.asarray(prompt, jnp.int32), key)
