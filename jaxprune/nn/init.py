"""Parameter creation with logical sharding axes, and the non-trainable ``Buffer`` variable."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Init = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


class Buffer(nnx.Variable):
    """Model state that is not trained by gradient (e.g. the MoE score-correction bias)."""


def normal(std: float) -> Init:
    return lambda key, shape, dtype: (std * jax.random.normal(key, shape, jnp.float32)).astype(
        dtype
    )


def uniform(bound: float) -> Init:
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)


def zeros(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    del key
    return jnp.zeros(shape, dtype)


def ones(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    del key
    return jnp.ones(shape, dtype)


def param(
    rngs: nnx.Rngs,
    shape: tuple[int, ...],
    axes: tuple[str | None, ...],
    init: Init,
    dtype: str | jnp.dtype = "float32",
    kind: type[nnx.Variable] = nnx.Param,
) -> nnx.Variable:
    """A variable whose metadata ``axes`` names one logical axis per dim (see ``sharding``)."""
    if len(axes) != len(shape):
        raise ValueError(f"param: axes {axes} do not match shape {shape}")
    return kind(init(rngs.params(), tuple(shape), jnp.dtype(dtype)), axes=tuple(axes))


def cast(v: nnx.Variable, dtype: jnp.dtype) -> jax.Array:
    """The variable's value in the compute dtype."""
    return v[...].astype(dtype)
