"""Logit losses with their gradient computed analytically in the forward pass.

:func:`fused_logit_losses` gives the same token sums as
:func:`jaxprune.train.losses.chunked_logit_losses` for ``kl`` in {forward, reverse, none}
and cross-entropy, but is a ``jax.custom_vjp``: while it walks the sequence chunk by chunk
(only (b, chunk, V) logits live), it also forms d(sum)/d(student logits) in closed form,

    forward KL   (softmax(s / T) - softmax(t / T)) / T
    reverse KL   p_s * (log p_s - log p_t - KL) / T      (p = softmax(. / T))
    CE           softmax(s) - onehot(y)

and pulls it back through the LM head at once. The backward pass only scales the stored
(b, T, d) hidden-state gradients and head-parameter gradients by the incoming cotangents, so
neither head is recomputed and no log-softmax is differentiated by autodiff.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxprune.ops.norms import rms_norm
from jaxprune.train.config import LossConfig


@dataclass(frozen=True)
class LMHead:
    """Final RMSNorm + LM head as a pure function of its parameters
    ``{"norm": (d,), "w": (V, d) when tied else (d, V)}``: (b, C, d) -> (b, C, V) fp32."""

    eps: float
    tied: bool
    dtype: str

    def __call__(self, params: dict, h: jax.Array) -> jax.Array:
        h = rms_norm(h, params["norm"], self.eps)
        w = params["w"].T if self.tied else params["w"]
        dt = jnp.dtype(self.dtype)
        return jnp.einsum("btd,dv->btv", h.astype(dt), w.astype(dt),
                          preferred_element_type=jnp.float32)  # fmt: skip

    @classmethod
    def of(cls, model) -> tuple[LMHead, dict]:
        """The head of a ``HybridLM`` and its parameters (read from the model)."""
        cfg = model.config
        w = model.embed[...] if cfg.tie_embeddings else model.lm_head[...]
        head = cls(float(model.final_norm.eps), bool(cfg.tie_embeddings), str(cfg.dtype))
        return head, {"norm": model.final_norm.weight[...], "w": w}


def supports(cfg: LossConfig) -> bool:
    """Whether :func:`fused_logit_losses` implements this loss."""
    return cfg.kl in ("forward", "reverse", "none")


def _split(x: jax.Array, c: int) -> jax.Array:
    """(b, T, ...) -> (n, b, c, ...), zero-padded to a multiple of c."""
    b, t = x.shape[:2]
    n = -(-t // c)
    x = jnp.pad(x, [(0, 0), (0, n * c - t)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(b, n, c, *x.shape[2:]), 1, 0)


def _unsplit(x: jax.Array, t: int) -> jax.Array:
    """(n, b, c, ...) -> (b, T, ...)."""
    n, b, c = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape(b, n * c, *x.shape[3:])[:, :t]


def _token_grads(s, t, y, m, cfg: LossConfig, use_kl: bool, use_ce: bool):
    """Masked token sums of KL / CE of one chunk and their gradients wrt the logits s."""
    out = {}
    if use_kl:
        temp = cfg.temperature
        ls = jax.nn.log_softmax(s / temp, axis=-1)
        lt = jax.nn.log_softmax(t / temp, axis=-1)
        ps = jnp.exp(ls)
        if cfg.kl == "forward":
            pt = jnp.exp(lt)
            tok = jnp.sum(pt * (lt - ls), axis=-1)
            g = (ps - pt) / temp
        else:
            diff = ls - lt
            tok = jnp.sum(ps * diff, axis=-1)
            g = ps * (diff - tok[..., None]) / temp
        out["kl"] = (jnp.sum(tok * m), g * m[..., None])
    if use_ce:
        mx = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
        mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
        e = jnp.exp(s - mx)
        z = jnp.sum(e, axis=-1, keepdims=True)
        picked = jnp.take_along_axis(s - mx, y[..., None], axis=-1)[..., 0]
        tok = jnp.log(z[..., 0]) - picked
        g = e / z - jax.nn.one_hot(y, s.shape[-1], dtype=s.dtype)
        out["ce"] = (jnp.sum(tok * m), g * m[..., None])
    return out


def _forward(head, t_head, cfg, hp, hs, targets, mask, t_hp, ht):
    """Token sums {"kl", "ce"} and their gradients wrt (hp, hs) for each active term."""
    b, t = targets.shape
    c = t if cfg.chunk <= 0 else min(cfg.chunk, t)
    use_kl = cfg.kl != "none" and ht is not None
    use_ce = cfg.ce_weight > 0 or not use_kl
    terms = [k for k, on in (("kl", use_kl), ("ce", use_ce)) if on]
    xs = {"hs": _split(hs, c), "y": _split(targets, c), "m": _split(mask.astype(jnp.float32), c)}
    if use_kl:
        xs["ht"] = _split(ht, c)

    def body(carry, x):
        s, pull = jax.vjp(head, hp, x["hs"])
        tl = t_head(t_hp, x["ht"]) if use_kl else None
        got = _token_grads(s, tl, x["y"], x["m"], cfg, use_kl, use_ce)
        new, dhs = {}, {}
        for k in terms:
            dp, dh = pull(got[k][1])
            new[k] = (carry[k][0] + got[k][0], jax.tree.map(jnp.add, carry[k][1], dp))
            dhs[k] = dh
        return new, dhs

    zero_p = jax.tree.map(jnp.zeros_like, hp)
    init = {k: (jnp.zeros((), jnp.float32), zero_p) for k in terms}
    acc, dhs = jax.lax.scan(body, init, xs)
    sums = {k: acc[k][0] if k in acc else jnp.zeros((), jnp.float32) for k in ("kl", "ce")}
    grads = {k: (acc[k][1], _unsplit(dhs[k], t)) for k in terms}
    return sums, grads


def fused_logit_losses(
    head: LMHead,
    hp: dict,
    h_student: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    cfg: LossConfig,
    t_head: LMHead | None = None,
    t_hp: dict | None = None,
    h_teacher: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Token sums ``{"kl", "ce"}`` (see :func:`~jaxprune.train.losses.chunked_logit_losses`)
    of the student head ``head(hp, h_student)`` against the teacher head ``t_head(t_hp,
    h_teacher)``; differentiable in ``hp`` and ``h_student`` (the teacher side and the
    targets / mask carry no gradient). ``cfg.kl`` must satisfy :func:`supports`."""
    if not supports(cfg):
        raise ValueError(f"fused logit losses do not implement kl={cfg.kl!r}")
    if h_teacher is not None:
        t_hp, h_teacher = jax.lax.stop_gradient((t_hp, h_teacher))
    return _fused(head, t_head, cfg, hp, h_student, targets, mask, t_hp, h_teacher)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused(head, t_head, cfg, hp, hs, targets, mask, t_hp, ht):
    return _forward(head, t_head, cfg, hp, hs, targets, mask, t_hp, ht)[0]


def _fwd(head, t_head, cfg, hp, hs, targets, mask, t_hp, ht):
    return _forward(head, t_head, cfg, hp, hs, targets, mask, t_hp, ht)


def _bwd(head, t_head, cfg, grads, g):
    dhp, dhs = None, None
    for k, (gp, gh) in grads.items():
        w = g[k]
        sp = jax.tree.map(lambda a, w=w: (a * w).astype(a.dtype), gp)
        dhp = sp if dhp is None else jax.tree.map(jnp.add, dhp, sp)
        sh = (gh * w).astype(gh.dtype)
        dhs = sh if dhs is None else dhs + sh
    return dhp, dhs, None, None, None, None


_fused.defvjp(_fwd, _bwd)
