"""Mixture-of-experts block: router, routed experts, optional shared expert, latent projection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.config import MLPConfig, MoEConfig
from jaxprune.nn.init import Buffer, normal, param, zeros
from jaxprune.nn.mlp import MLP
from jaxprune.nn.taps import ExpertHidden, ExpertOutputs, Routing, Tap, as_shared
from jaxprune.ops import moe as moe_ops


class MoE(nnx.Module):
    """Router (d, E) fp32; experts up/gate (E, d_e, F), down (E, F, d_e); d_e = latent or d."""

    def __init__(
        self,
        cfg: MoEConfig,
        hidden: int,
        *,
        dtype="float32",
        param_dtype="float32",
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.cfg = cfg
        self.dtype = jnp.dtype(dtype)
        e, f, init, pd = cfg.num_experts, cfg.intermediate, normal(init_std), param_dtype
        de = cfg.latent or hidden
        self.router = param(rngs, (hidden, e), ("embed", "experts"), init, "float32")
        if cfg.router == "sigmoid":
            self.correction_bias = param(rngs, (e,), ("experts",), zeros, "float32", kind=Buffer)
        ax = ("experts", "expert_embed", "expert_mlp")
        self.up_proj = param(rngs, (e, de, f), ax, init, pd)
        if cfg.activation == "swiglu":
            self.gate_proj = param(rngs, (e, de, f), ax, init, pd)
        self.down_proj = param(
            rngs, (e, f, de), ("experts", "expert_mlp", "expert_embed"), init, pd
        )
        if cfg.latent:
            self.latent_in = param(rngs, (hidden, de), ("embed", "latent"), init, pd)
            self.latent_out = param(rngs, (de, hidden), ("latent", "embed"), init, pd)
        if cfg.shared_intermediate:
            shared = MLPConfig(cfg.shared_intermediate, cfg.activation)
            self.shared = MLP(
                shared, hidden, dtype=dtype, param_dtype=pd, init_std=init_std, rngs=rngs
            )

    def route(self, x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """x (n, d) -> routing weights (n, k) fp32 and expert indices (n, k).

        ``mask`` (E,) 0/1 routes as if the masked-out experts had been removed."""
        cfg = self.cfg
        logits = jnp.einsum("nd,de->ne", x.astype(jnp.float32), self.router[...])
        if cfg.router == "sigmoid":
            return moe_ops.route_sigmoid(
                logits,
                self.correction_bias[...],
                top_k=cfg.top_k,
                n_group=cfg.n_group,
                topk_group=cfg.topk_group,
                norm_topk_prob=cfg.norm_topk_prob,
                routed_scaling_factor=cfg.routed_scaling_factor,
                expert_mask=mask,
            )
        w, idx = moe_ops.route_softmax(
            logits, top_k=cfg.top_k, norm_topk_prob=cfg.norm_topk_prob, expert_mask=mask
        )
        return w * cfg.routed_scaling_factor, idx

    def __call__(
        self, x: jax.Array, *, mask: jax.Array | None = None, tap: Tap | None = None
    ) -> tuple[jax.Array, None]:
        """x (b, T, d) -> ((b, T, d), None).

        ``mask`` (E,): expert mask for routing. ``tap`` sees :class:`Routing`,
        :class:`ExpertHidden`, :class:`ExpertOutputs` and the shared expert's
        :class:`MLPHidden` (``shared=True``).
        """
        cfg, dt = self.cfg, self.dtype
        b, t, d = x.shape
        shared_in = x
        x = x.astype(dt).reshape(b * t, d)
        weights, idx = self.route(x, mask)
        if tap is not None:
            tap(Routing(idx, weights))
        xe = x @ self.latent_in[...].astype(dt) if cfg.latent else x
        dispatch = moe_ops.moe_sorted if cfg.dispatch == "sorted" else moe_ops.moe_dense
        gate = self.gate_proj[...].astype(dt) if cfg.activation == "swiglu" else None
        y = dispatch(
            xe,
            weights,
            idx,
            self.up_proj[...].astype(dt),
            self.down_proj[...].astype(dt),
            gate,
            observe=None if tap is None else _observer(tap),
        )
        if cfg.latent:
            y = y @ self.latent_out[...].astype(dt)
        y = y.reshape(b, t, d)
        if cfg.shared_intermediate:
            y = y + self.shared(shared_in, tap=as_shared(tap))[0]
        return y, None


def _observer(tap: Tap) -> moe_ops.Observe:
    def observe(a: moe_ops.Assignments) -> None:
        tap(ExpertHidden(a.hidden, a.expert, a.token))
        tap(ExpertOutputs(a.out, a.expert, a.token))

    return observe
