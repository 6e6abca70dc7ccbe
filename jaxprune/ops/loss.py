"""Token negative log-likelihood: the one next-token cross-entropy of the library."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target] per token, in fp32: (..., V), (...) int -> (...).

    ``logsumexp(logits) - logits[target]``, both taken relative to the row maximum (so the
    difference keeps fp32 precision however large the logits), without materialising the
    full log-softmax.
    """
    logits = logits.astype(jnp.float32)
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    shifted = logits - m
    picked = jnp.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
    return jnp.log(jnp.sum(jnp.exp(shifted), axis=-1)) - picked
