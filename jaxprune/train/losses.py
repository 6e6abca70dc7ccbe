"""Distillation and language-model losses, all computed in fp32.

Per-token functions take logits (..., V) and return (...). :func:`chunked_logit_losses`
applies them to final hidden states chunk by chunk along the sequence, so that only
(b, chunk, V) student and teacher logits exist at any time (in the forward pass and, through
``jax.checkpoint``, in the backward pass). Token sums are returned, not means: callers
divide by a token count that may span several micro-batches.

Temperature, and no T^2 factor (decision). Every logit divergence compares
``softmax(logits / T)`` of student and teacher and is **not** multiplied by T^2. Hinton et
al. (2015) multiply by T^2 because the gradient of the soft-target term with respect to the
student logits is ``(p_s^T - p_t^T) / T``, which shrinks like 1 / T^2 once T is large; the
factor keeps that gradient comparable across temperatures and against a hard-label term. We
follow ModelOpt's ``LogitsKLLoss``, the Minitron reference, which has no factor, because
(1) Minitron distills at T = 1, where both conventions agree; (2) with dynamic balancing
(``LossConfig.balance`` with CE on) the KD term is rescaled by ``stop_grad(ce / kd)``, so a
constant factor cancels in both value and gradient; (3) with the KD term alone, AdamW is
invariant to a constant loss scale up to ``eps`` and gradient clipping. For Hinton's
weighting at T != 1 next to an unbalanced CE term, set ``kd_weight = T**2``.
``tests/train/test_kd_temperature.py`` pins this.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxprune.ops.loss import token_nll
from jaxprune.train.config import LossConfig

Head = Callable[[jax.Array], jax.Array]  # hidden (b, C, d) -> logits (b, C, V) fp32


def _log_softmax(logits: jax.Array, temperature: float) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def forward_kl(student: jax.Array, teacher: jax.Array, temperature: float = 1.0) -> jax.Array:
    """KL(p_t || p_s) per token: (..., V) x 2 -> (...)."""
    ls, lt = _log_softmax(student, temperature), _log_softmax(teacher, temperature)
    return jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)


def reverse_kl(student: jax.Array, teacher: jax.Array, temperature: float = 1.0) -> jax.Array:
    """KL(p_s || p_t) per token: (..., V) x 2 -> (...)."""
    ls, lt = _log_softmax(student, temperature), _log_softmax(teacher, temperature)
    return jnp.sum(jnp.exp(ls) * (ls - lt), axis=-1)


def topk_kl(student: jax.Array, teacher: jax.Array, k: int, temperature: float = 1.0) -> jax.Array:
    """Forward KL against the teacher restricted to its top ``k`` tokens, renormalized.

    The teacher's tail mass is dropped; the student's log-probabilities are its full
    log-softmax read at those k tokens, so this is exactly KL(p_t^topk || p_s) over the
    whole vocabulary (>= 0, and 0 only when the student matches the truncated teacher).
    (..., V) x 2 -> (...).
    """
    vals, idx = jax.lax.top_k(teacher.astype(jnp.float32) / temperature, k)
    lt = jax.nn.log_softmax(vals, axis=-1)
    ls = jnp.take_along_axis(_log_softmax(student, temperature), idx, axis=-1)
    return jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)


#: -log softmax(logits)[target] per token: (..., V), (...) int -> (...) fp32. The one token
#: NLL of the library (``jaxprune.ops.loss.token_nll``), under its training name.
cross_entropy = token_nll


def token_kl(student: jax.Array, teacher: jax.Array, cfg: LossConfig) -> jax.Array:
    """The configured logit divergence per token: (..., V) x 2 -> (...)."""
    if cfg.kl == "forward":
        return forward_kl(student, teacher, cfg.temperature)
    if cfg.kl == "reverse":
        return reverse_kl(student, teacher, cfg.temperature)
    if cfg.kl == "topk":
        return topk_kl(student, teacher, cfg.top_k, cfg.temperature)
    raise ValueError(f"no logit divergence for kl={cfg.kl!r}")


def kd_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    mask: jax.Array,
    *,
    kind: str = "forward",
    temperature: float = 1.0,
    top_k: int = 0,
) -> jax.Array:
    """Masked token mean of a logit divergence. logits (b, T, V), mask (b, T) -> scalar.

    The unchunked reference of :func:`chunked_logit_losses` (it materializes full logits).
    """
    cfg = LossConfig(kl=kind, temperature=temperature, top_k=top_k)
    per = token_kl(student_logits, teacher_logits, cfg)
    mask = mask.astype(jnp.float32)
    return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def chunked_logit_losses(
    h_student: jax.Array,
    student_head: Head,
    targets: jax.Array,
    mask: jax.Array,
    cfg: LossConfig,
    h_teacher: jax.Array | None = None,
    teacher_head: Head | None = None,
) -> dict[str, jax.Array]:
    """Token sums of the logit losses over sequence chunks.

    h_student (b, T, d_s), h_teacher (b, T, d_t) final hidden states (before the final
    norm); targets (b, T) int; mask (b, T) float (0 = padding / document boundary).
    Returns ``{"kl": sum, "ce": sum}`` fp32 scalars (an entry is 0 when its loss is off).
    The teacher branch carries no gradient.
    """
    b, t = targets.shape
    c = t if cfg.chunk <= 0 else min(cfg.chunk, t)
    n = -(-t // c)
    pad = n * c - t
    mask = mask.astype(jnp.float32)
    use_kl = cfg.kl != "none" and h_teacher is not None

    def split(x: jax.Array) -> jax.Array:  # (b, T, ...) -> (n, b, c, ...)
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(b, n, c, *x.shape[2:]), 1, 0)

    xs = {"hs": split(h_student), "y": split(targets), "m": split(mask)}
    if use_kl:
        xs["ht"] = split(jax.lax.stop_gradient(h_teacher))

    @jax.checkpoint
    def body(carry: dict[str, jax.Array], x: dict[str, jax.Array]):
        s = student_head(x["hs"])  # (b, c, V) fp32
        out = dict(carry)
        if cfg.ce_weight > 0 or not use_kl:
            out["ce"] = carry["ce"] + jnp.sum(cross_entropy(s, x["y"]) * x["m"])
        if use_kl:
            tl = jax.lax.stop_gradient(teacher_head(x["ht"]))
            out["kl"] = carry["kl"] + jnp.sum(token_kl(s, tl, cfg) * x["m"])
        return out, None

    zero = jnp.zeros((), jnp.float32)
    sums, _ = jax.lax.scan(body, {"kl": zero, "ce": zero}, xs)
    return sums


def intermediate_loss(
    h_student: jax.Array,
    h_teacher: jax.Array,
    mask: jax.Array,
    kind: str = "cosine",
    proj: jax.Array | None = None,
) -> jax.Array:
    """Token sum of ``1 - cos`` or the per-token mean squared error between
    ``h_student @ proj`` (b, T, d_s) @ (d_s, d_t) and ``h_teacher`` (b, T, d_t). fp32."""
    hs = h_student.astype(jnp.float32)
    if proj is not None:
        hs = hs @ proj.astype(jnp.float32)
    ht = jax.lax.stop_gradient(h_teacher).astype(jnp.float32)
    if kind == "cosine":
        num = jnp.sum(hs * ht, axis=-1)
        den = jnp.linalg.norm(hs, axis=-1) * jnp.linalg.norm(ht, axis=-1)
        per = 1.0 - num / jnp.maximum(den, 1e-8)
    elif kind == "mse":
        per = jnp.mean(jnp.square(hs - ht), axis=-1)
    else:
        raise ValueError(f"intermediate loss must be cosine or mse, got {kind!r}")
    return jnp.sum(per * mask.astype(jnp.float32))


def _ratio(a: jax.Array, b: jax.Array) -> jax.Array:
    return jax.lax.stop_gradient(a / jnp.maximum(b, 1e-12))


def combine_losses(
    kl: jax.Array, ce: jax.Array, inter: jax.Array | None, cfg: LossConfig
) -> jax.Array:
    """The objective from normalized (token-mean) parts, with dynamic balancing.

    kd = kl + w * inter, w = stop_grad(kl / inter) when balancing with a logit loss, else 1;
    with CE on and balancing, kd <- kd * stop_grad(ce / kd). total = ce_weight * ce +
    kd_weight * kd. Without a teacher the objective is plain cross-entropy.
    """
    has_kl = cfg.kl != "none"
    if not cfg.uses_teacher:
        return ce * (cfg.ce_weight if cfg.ce_weight > 0 else 1.0)
    kd = kl if has_kl else jnp.zeros((), jnp.float32)
    if inter is not None:
        w = _ratio(kl, inter) if (cfg.balance and has_kl) else 1.0
        kd = kd + w * inter
    if cfg.ce_weight > 0:
        if cfg.balance:
            kd = kd * _ratio(ce, kd)
        return cfg.ce_weight * ce + cfg.kd_weight * kd
    return cfg.kd_weight * kd
