"""The router: target budget -> a distribution over every elastic axis's choices.

One small MLP per axis maps the budget's one-hot (n_budgets,) to logits (rows, K) (rows:
1, or one per layer for a heterogeneous FFN). :func:`sample` draws a straight-through
Gumbel-softmax sample: one-hot in the forward pass (the masks are exact prefixes, the
masked parent is a real child), the tempered softmax's gradient in the backward pass.
The final layers start at zero, so every choice starts equally likely.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.elastic.space import ElasticSpace


class Router(nnx.Module):
    def __init__(self, space: ElasticSpace, n_budgets: int, hidden: int = 64, *, rngs: nnx.Rngs):
        self.names = tuple(a.name for a in space.axes)
        self.shapes = tuple((len(a.rows), a.n_choices) for a in space.axes)
        self.n_budgets = n_budgets
        self.inp = nnx.List([nnx.Linear(n_budgets, hidden, rngs=rngs) for _ in space.axes])
        self.out = nnx.List(
            [
                nnx.Linear(hidden, r * k, kernel_init=nnx.initializers.zeros, rngs=rngs)
                for r, k in self.shapes
            ]
        )

    def __call__(self, budget: jax.Array) -> dict[str, jax.Array]:
        """budget (n_budgets,) one-hot -> {axis: logits (rows, K) fp32}."""
        out = {}
        for name, shape, a, b in zip(self.names, self.shapes, self.inp, self.out):
            out[name] = b(jax.nn.leaky_relu(a(budget.astype(jnp.float32)))).reshape(shape)
        return out


def sample(logits: jax.Array, key: jax.Array, temperature: jax.Array, hard: bool = True):
    """Gumbel-softmax over the last axis of ``logits``; ``hard``: straight-through one-hot."""
    g = jax.random.gumbel(key, logits.shape, jnp.float32)
    soft = jax.nn.softmax((logits + g) / temperature, axis=-1)
    if not hard:
        return soft
    one = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return one + (soft - jax.lax.stop_gradient(soft))  # exactly one-hot forward


def sample_all(logits: dict, key: jax.Array, temperature, hard: bool = True) -> dict:
    keys = jax.random.split(key, len(logits))
    return {n: sample(v, k, temperature, hard) for (n, v), k in zip(sorted(logits.items()), keys)}


def probabilities(logits: dict, temperature=1.0) -> dict:
    """The router's (noise-free) tempered distribution per axis."""
    return {n: jax.nn.softmax(v / temperature, axis=-1) for n, v in logits.items()}


def most_likely(logits: dict) -> dict:
    """{axis: (rows,) int} the argmax choice per row (extraction)."""
    return {n: jnp.argmax(v, axis=-1) for n, v in logits.items()}
