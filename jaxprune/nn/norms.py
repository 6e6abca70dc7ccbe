"""RMSNorm module."""

from __future__ import annotations

import jax
from flax import nnx

from jaxprune.nn.init import ones, param
from jaxprune.ops.norms import rms_norm


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis (fp32 math). x (..., d) -> (..., d)."""

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        axis_name: str = "embed",
        param_dtype="float32",
        rngs: nnx.Rngs,
    ):
        self.eps = eps
        self.weight = param(rngs, (dim,), (axis_name,), ones, param_dtype)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``mask`` (d,): take the RMS over the kept channels only (masked pruning)."""
        return rms_norm(x, self.weight[...], self.eps, mask)
