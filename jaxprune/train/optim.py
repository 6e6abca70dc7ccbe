"""AdamW with warm-up and cosine / WSD / constant schedules, and global-norm clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxprune.train.config import OptimConfig


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the update count.

    Linear warm-up 0 -> lr over :meth:`OptimConfig.warmup` steps; then ``cosine``: cosine decay to
    ``min_lr_ratio * lr`` at ``total_steps``; ``wsd``: constant, then a linear decay to
    ``min_lr_ratio * lr`` over the last ``decay_fraction * total_steps`` steps;
    ``constant``: lr.
    """
    warm = cfg.warmup(total_steps)
    lo = cfg.lr * cfg.min_lr_ratio
    rest = max(total_steps - warm, 1)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, rest, alpha=cfg.min_lr_ratio)
    elif cfg.schedule == "wsd":
        decay = max(int(round(cfg.decay_fraction * total_steps)), 1)
        stable = max(rest - decay, 0)
        after = optax.join_schedules(
            [optax.constant_schedule(cfg.lr), optax.linear_schedule(cfg.lr, lo, decay)],
            [stable],
        )
    else:
        after = optax.constant_schedule(cfg.lr)
    if warm == 0:
        return after
    warmup = optax.linear_schedule(cfg.lr / warm, cfg.lr, warm - 1) if warm > 1 else None
    if warmup is None:
        return optax.join_schedules([optax.constant_schedule(cfg.lr), after], [warm])
    return optax.join_schedules([warmup, after], [warm])


def decay_mask(params) -> object:
    """True for parameters with >= 2 dims (matrices, embeddings); norms and biases: False."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm(clip_norm) -> AdamW(schedule, b1, b2, eps, weight_decay).

    ``clip_norm <= 0`` disables clipping. The optimizer state holds fp32 moments for fp32
    master weights.
    """
    parts = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(
        optax.adamw(
            make_schedule(cfg, total_steps),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
