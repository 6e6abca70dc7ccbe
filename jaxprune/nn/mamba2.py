"""Mamba2 mixer: projections, causal conv over [x | B | C], the SSD scan, gated norm, out_proj.

The fused HF ``in_proj`` [z | x, B, C | dt] is kept as separate kernels, each with its own
head / group axes, so that pruning and sharding address heads and channels directly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.config import Mamba2Config
from jaxprune.kernels.ssd import mamba_chunk_scan, process_dt, ssd_step
from jaxprune.nn.cache import MambaCache
from jaxprune.nn.init import normal, ones, param, uniform, zeros
from jaxprune.nn.taps import MambaX, Tap
from jaxprune.ops.conv import causal_conv1d
from jaxprune.ops.norms import gated_rms_norm

_HP = ("ssm_heads", "ssm_head_dim")
_GN = ("ssm_groups", "ssm_state")


class Mamba2(nnx.Module):
    """Kernels: z/x (d, H, P), B/C (d, G, N), dt (d, H), out (H, P, d); conv taps (K, ...)."""

    def __init__(
        self,
        cfg: Mamba2Config,
        hidden: int,
        *,
        dtype="float32",
        param_dtype="float32",
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.cfg = cfg
        self.dtype = jnp.dtype(dtype)
        h, p, n, g, k = cfg.num_heads, cfg.head_dim, cfg.state, cfg.n_groups, cfg.conv_kernel
        init, pd = normal(init_std), param_dtype
        self.z_proj = param(rngs, (hidden, h, p), ("embed", *_HP), init, pd)
        self.x_proj = param(rngs, (hidden, h, p), ("embed", *_HP), init, pd)
        self.B_proj = param(rngs, (hidden, g, n), ("embed", *_GN), init, pd)
        self.C_proj = param(rngs, (hidden, g, n), ("embed", *_GN), init, pd)
        self.dt_proj = param(rngs, (hidden, h), ("embed", "ssm_heads"), init, pd)
        if cfg.proj_bias:
            self.z_proj_bias = param(rngs, (h, p), _HP, zeros, pd)
            self.x_proj_bias = param(rngs, (h, p), _HP, zeros, pd)
            self.B_proj_bias = param(rngs, (g, n), _GN, zeros, pd)
            self.C_proj_bias = param(rngs, (g, n), _GN, zeros, pd)
            self.dt_proj_bias = param(rngs, (h,), ("ssm_heads",), zeros, pd)
            self.out_proj_bias = param(rngs, (hidden,), ("embed",), zeros, pd)
        conv_init = uniform(1.0 / math.sqrt(k))
        self.conv_x = param(rngs, (k, h, p), ("conv", *_HP), conv_init, pd)
        self.conv_B = param(rngs, (k, g, n), ("conv", *_GN), conv_init, pd)
        self.conv_C = param(rngs, (k, g, n), ("conv", *_GN), conv_init, pd)
        if cfg.conv_bias:
            self.conv_x_bias = param(rngs, (h, p), _HP, zeros, pd)
            self.conv_B_bias = param(rngs, (g, n), _GN, zeros, pd)
            self.conv_C_bias = param(rngs, (g, n), _GN, zeros, pd)
        self.A_log = nnx.Param(
            jnp.log(jnp.arange(1, h + 1, dtype=jnp.float32)).astype(pd), axes=("ssm_heads",)
        )
        self.D = param(rngs, (h,), ("ssm_heads",), ones, pd)
        self.dt_bias = nnx.Param(_dt_bias_init(rngs.params(), cfg).astype(pd), axes=("ssm_heads",))
        self.norm = param(rngs, (h, p), _HP, ones, pd)
        self.out_proj = param(rngs, (h, p, hidden), (*_HP, "embed"), init, pd)

    def __call__(
        self,
        u: jax.Array,
        *,
        cache: MambaCache | None = None,
        seq_idx: jax.Array | None = None,
        mask: jax.Array | None = None,
        valid: jax.Array | None = None,
        tap: Tap | None = None,
    ) -> tuple[jax.Array, MambaCache | None]:
        """u (b, T, d) -> ((b, T, d), cache). With ``cache`` the scan starts from its state.

        ``mask`` (H, P) 0/1 restricts the gated norm of each group to the kept (head,
        channel) pairs (a masked model's removed weights are zero, so nothing else
        changes). ``tap`` sees :class:`MambaX`, the x slice of the input projection (b,T,H,P).
        ``valid`` (b, T) bool marks real tokens: padded positions are zeroed before the
        projections, at the conv input and after the conv, so x, B and C vanish there and
        the conv and SSM states are exactly those of the unpadded tokens.
        """
        cfg, dt_ = self.cfg, self.dtype
        b, t, _ = u.shape
        h, p, n, g = cfg.num_heads, cfg.head_dim, cfg.state, cfg.n_groups
        u = _zero_padding(u.astype(dt_), valid)
        z = self._proj(u, "z_proj")
        x_in = self._proj(u, "x_proj")
        if tap is not None:
            tap(MambaX(x_in))
        xbc = jnp.concatenate(
            [x_in.reshape(b, t, -1)]
            + [self._proj(u, nm).reshape(b, t, -1) for nm in ("B_proj", "C_proj")],
            -1,
        )
        dt = self._proj(u, "dt_proj")
        w = jnp.concatenate(
            [
                self.conv_x[...].reshape(cfg.conv_kernel, -1),
                self.conv_B[...].reshape(cfg.conv_kernel, -1),
                self.conv_C[...].reshape(cfg.conv_kernel, -1),
            ],
            -1,
        )
        bias = None
        if cfg.conv_bias:
            bias = jnp.concatenate(
                [
                    self.conv_x_bias[...].reshape(-1),
                    self.conv_B_bias[...].reshape(-1),
                    self.conv_C_bias[...].reshape(-1),
                ]
            )
        xbc, conv_state = causal_conv1d(
            _zero_padding(xbc, valid),
            w,
            bias,
            state=None if cache is None else cache.conv,
            seq_idx=seq_idx,
        )
        xbc = _zero_padding(jax.nn.silu(xbc), valid)
        x = xbc[..., : h * p].reshape(b, t, h, p)
        B = xbc[..., h * p : h * p + g * n].reshape(b, t, g, n)
        C = xbc[..., h * p + g * n :].reshape(b, t, g, n)
        A = -jnp.exp(self.A_log[...].astype(jnp.float32))
        D = self.D[...].astype(jnp.float32)
        if cache is not None and t == 1:
            limit = cfg.dt_limit if cfg.decode_dt_limit is None else cfg.decode_dt_limit
            dtp = process_dt(dt[:, 0], self.dt_bias[...], True, limit)
            y, ssm = ssd_step(cache.ssm, x[:, 0], dtp, A, B[:, 0], C[:, 0])
            y = (y + D[:, None] * x[:, 0].astype(jnp.float32))[:, None].astype(dt_)
        else:
            y, ssm = mamba_chunk_scan(
                x,
                dt,
                A,
                B,
                C,
                cfg.chunk_size,
                D=D,
                dt_bias=self.dt_bias[...],
                dt_softplus=True,
                dt_limit=cfg.dt_limit,
                initial_states=None if cache is None else cache.ssm,
                seq_idx=seq_idx,
                return_final_states=True,
                impl=cfg.ssd_impl,
            )
        r = h // g
        y = gated_rms_norm(
            y.reshape(b, t, g, r * p),
            z.reshape(b, t, g, r * p),
            self.norm[...].reshape(g, r * p),
            cfg.norm_eps,
            None if mask is None else mask.reshape(g, r * p),
        ).reshape(b, t, h, p)
        out = jnp.einsum("bthp,hpd->btd", y, self.out_proj[...].astype(dt_))
        if cfg.proj_bias:
            out = out + self.out_proj_bias[...].astype(dt_)
        new_cache = None if cache is None else MambaCache(conv_state.astype(cache.conv.dtype), ssm)
        return out, new_cache

    def _proj(self, u: jax.Array, name: str) -> jax.Array:
        w = getattr(self, name)[...].astype(self.dtype)
        y = jnp.einsum("btd,d...->bt...", u, w)
        if self.cfg.proj_bias:
            y = y + getattr(self, name + "_bias")[...].astype(self.dtype)
        return y

    def init_cache(self, batch: int, dtype) -> MambaCache:
        cfg = self.cfg
        return MambaCache(
            conv=jnp.zeros((batch, cfg.conv_kernel - 1, cfg.conv_dim), dtype),
            ssm=jnp.zeros((batch, cfg.num_heads, cfg.head_dim, cfg.state), jnp.float32),
        )


def _zero_padding(a: jax.Array, valid: jax.Array | None) -> jax.Array:
    """a (b, T, ...) with the positions where ``valid`` (b, T) is False set to zero."""
    if valid is None:
        return a
    return jnp.where(valid.reshape(valid.shape + (1,) * (a.ndim - 2)), a, jnp.zeros((), a.dtype))


def _dt_bias_init(key: jax.Array, cfg: Mamba2Config) -> jax.Array:
    """inverse-softplus of a log-uniform dt in [dt_min, dt_max], floored at dt_floor."""
    lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
    dt = jnp.exp(jax.random.uniform(key, (cfg.num_heads,)) * (hi - lo) + lo)
    dt = jnp.maximum(dt, cfg.dt_floor)
    return dt + jnp.log(-jnp.expm1(-dt))
