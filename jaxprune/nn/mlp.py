"""MLP block (relu^2 or SwiGLU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.config import MLPConfig
from jaxprune.nn.init import normal, param, zeros
from jaxprune.nn.taps import MLPHidden, Tap
from jaxprune.ops.mlp import dense, mlp_hidden


class MLP(nnx.Module):
    """Kernels: up / gate (d, F), down (F, d)."""

    def __init__(
        self,
        cfg: MLPConfig,
        hidden: int,
        *,
        dtype="float32",
        param_dtype="float32",
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.cfg = cfg
        self.dtype = jnp.dtype(dtype)
        f, init = cfg.intermediate, normal(init_std)
        self.up_proj = param(rngs, (hidden, f), ("embed", "mlp"), init, param_dtype)
        if cfg.activation == "swiglu":
            self.gate_proj = param(rngs, (hidden, f), ("embed", "mlp"), init, param_dtype)
        self.down_proj = param(rngs, (f, hidden), ("mlp", "embed"), init, param_dtype)
        if cfg.bias:
            self.up_bias = param(rngs, (f,), ("mlp",), zeros, param_dtype)
            if cfg.activation == "swiglu":
                self.gate_bias = param(rngs, (f,), ("mlp",), zeros, param_dtype)
            self.down_bias = param(rngs, (hidden,), ("embed",), zeros, param_dtype)

    def __call__(self, x: jax.Array, *, tap: Tap | None = None) -> tuple[jax.Array, None]:
        """x (..., d) -> ((..., d), None). ``tap`` sees :class:`MLPHidden`, the down
        projection's input."""
        swiglu, bias, dt = self.cfg.activation == "swiglu", self.cfg.bias, self.dtype
        h = mlp_hidden(
            x.astype(dt),
            self.up_proj[...].astype(dt),
            self.gate_proj[...].astype(dt) if swiglu else None,
            self.up_bias[...] if bias else None,
            self.gate_bias[...] if bias and swiglu else None,
        )
        if tap is not None:
            tap(MLPHidden(h))
        return dense(h, self.down_proj[...].astype(dt), self.down_bias[...] if bias else None), None
