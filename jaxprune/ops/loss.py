"""Token negative log-likelihood: the one next-token cross-entropy of the library."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target] per token, in fp32: (..., V), (...) int -> (...).

    Computed as ``logsumexp(logits) - logits[target]``, so no second (..., V) array (the
    full log-softmax) is materialised.
    """
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked
