"""Feed-forward math: relu^2 (Nemotron-H) and SwiGLU (Llama family)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def relu2(x: jax.Array) -> jax.Array:
    """Squared ReLU."""
    return jnp.square(jax.nn.relu(x))


def mlp(
    x: jax.Array,
    w_up: jax.Array,
    w_down: jax.Array,
    w_gate: jax.Array | None = None,
    b_up: jax.Array | None = None,
    b_down: jax.Array | None = None,
    b_gate: jax.Array | None = None,
) -> jax.Array:
    """``down(act(x @ up))``: relu^2 when ``w_gate`` is None, else ``silu(x @ gate) * (x @ up)``.

    x (..., d); w_up, w_gate (d, F); w_down (F, d) -> (..., d).
    """
    return _dense(mlp_hidden(x, w_up, w_gate, b_up, b_gate), w_down, b_down)


def mlp_hidden(
    x: jax.Array,
    w_up: jax.Array,
    w_gate: jax.Array | None = None,
    b_up: jax.Array | None = None,
    b_gate: jax.Array | None = None,
) -> jax.Array:
    """The activation that feeds the down projection: (..., d) -> (..., F)."""
    h = _dense(x, w_up, b_up)
    return relu2(h) if w_gate is None else jax.nn.silu(_dense(x, w_gate, b_gate)) * h


def dense(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """``x @ w (+ b)`` in x's dtype."""
    return _dense(x, w, b)


def _dense(x: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
    y = jnp.einsum("...d,df->...f", x, w.astype(x.dtype))
    return y if b is None else y + b.astype(x.dtype)
