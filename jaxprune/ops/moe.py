"""Pure-function Mixture-of-Experts math: routing, expert MLPs and token dispatch.

Shapes: ``n`` tokens (callers flatten ``(b, T, d) -> (n, d)``), ``d`` model width, ``E`` routed
experts, ``F`` expert width, ``k`` experts per token.

Routing follows the HF reference implementations:

* :func:`route_sigmoid` -- NemotronH / DeepSeek-V3 (``NemotronHMoE.route_tokens_to_experts``):
  sigmoid scores, a selection-only correction bias, group-limited top-k, weights from the unbiased
  scores, optional renormalisation (denominator ``sum + 1e-20``) and ``routed_scaling_factor``.
* :func:`route_softmax` -- Qwen3-MoE / Mixtral: fp32 softmax over all experts, top-k, optional
  renormalisation (Mixtral always renormalises, i.e. ``norm_topk_prob=True``).

Experts are stored as batched weights ``w_up (E, d, F)``, optional ``w_gate (E, d, F)`` and
``w_down (E, F, d)``. The activation is chosen by the presence of ``w_gate``:

* ``w_gate is None``: non-gated relu² (NemotronH), ``down(relu(x @ up) ** 2)``;
* ``w_gate`` given: SwiGLU (Qwen3-MoE, Mixtral), ``down(silu(x @ gate) * (x @ up))``.

Numerics of both dispatchers: expert weights are cast to ``x.dtype``; expert matmuls take
``x.dtype`` operands with fp32 accumulation (:func:`moe_dense` upcasts the rounded operands and
multiplies in fp32 at HIGHEST precision, which is the same math and also runs on XLA:CPU); the
activation is computed in fp32 and rounded to ``x.dtype`` before the down projection; the
routing-weighted combine is done in fp32 and the result is cast to ``x.dtype``.

Ties in top-k (both expert and group selection) go to the lower index (``jax.lax.top_k``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Assignments(NamedTuple):
    """One row per (token, expert) assignment, m = n * k: the expert MLP ``hidden`` (m, F),
    the unweighted expert output ``out`` (m, d), the ``expert`` (m,) and ``token`` (m,) ids."""

    hidden: jax.Array
    out: jax.Array
    expert: jax.Array
    token: jax.Array


#: ``observe(assignments)``: called at trace time with the per-assignment values (calibration).
Observe = Callable[[Assignments], None]

# Added to the top-k weight sum before renormalising sigmoid routing weights, as in HF
# NemotronH / DeepSeek-V3 (`denominator = topk_weights.sum(-1, keepdim=True) + 1e-20`).
SIGMOID_NORM_EPS = 1e-20


def route_sigmoid(
    logits: jax.Array,
    correction_bias: jax.Array | None,
    *,
    top_k: int,
    n_group: int = 1,
    topk_group: int = 1,
    norm_topk_prob: bool = True,
    routed_scaling_factor: float = 1.0,
    expert_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """NemotronH / DeepSeek-V3 group-limited sigmoid routing.

    Args:
      logits: (..., E) router logits; computed on in fp32.
      correction_bias: (E,) ``e_score_correction_bias``, used for expert *selection* only; None
        means zeros.
      top_k: experts per token.
      n_group: number of contiguous expert groups (E must be divisible by it).
      topk_group: number of groups kept per token; a group's score is the sum of its top-2
        biased scores (top-1 when a group holds a single expert).
      norm_topk_prob: divide the selected weights by their sum (+1e-20).
      routed_scaling_factor: final multiplier of the weights.
      expert_mask: optional (E,) 0/1; masked-out experts are never selected and a group's
        score sums the top-2 of its *kept* experts, exactly as if they had been removed.

    Returns:
      weights (..., k) fp32, gathered from the unbiased sigmoid scores, and indices (..., k)
      int32, ordered by decreasing biased score.
    """
    num_experts = logits.shape[-1]
    if num_experts % n_group:
        raise ValueError(f"num_experts={num_experts} is not divisible by n_group={n_group}")
    if not 1 <= topk_group <= n_group:
        raise ValueError(f"topk_group={topk_group} must lie in [1, n_group={n_group}]")
    group_size = num_experts // n_group
    if not 1 <= top_k <= topk_group * group_size:
        raise ValueError(
            f"top_k={top_k} must lie in [1, topk_group * group_size = {topk_group * group_size}]"
        )

    scores = jax.nn.sigmoid(logits.astype(jnp.float32))
    if correction_bias is None:
        select = scores
    else:
        bias = correction_bias.astype(jnp.float32).reshape((1,) * (scores.ndim - 1) + (-1,))
        select = scores + bias
    if expert_mask is not None:
        select = jnp.where(expert_mask > 0, select, -jnp.inf)

    if topk_group < n_group:
        lead = select.shape[:-1]
        grouped = select.reshape(*lead, n_group, group_size)
        best = jax.lax.top_k(grouped, min(2, group_size))[0]
        group_scores = jnp.where(jnp.isfinite(best), best, 0.0).sum(axis=-1)
        _, kept = jax.lax.top_k(group_scores, topk_group)
        group_mask = jax.nn.one_hot(kept, n_group, dtype=jnp.bool_).any(axis=-2)
        expert_mask = jnp.repeat(group_mask, group_size, axis=-1)
        select = jnp.where(expert_mask, select, -jnp.inf)

    _, indices = jax.lax.top_k(select, top_k)
    weights = jnp.take_along_axis(scores, indices, axis=-1)
    if norm_topk_prob:
        weights = weights / (weights.sum(axis=-1, keepdims=True) + SIGMOID_NORM_EPS)
    weights = weights * routed_scaling_factor
    return weights, indices.astype(jnp.int32)


def route_softmax(
    logits: jax.Array,
    *,
    top_k: int,
    norm_topk_prob: bool = True,
    expert_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Qwen3-MoE / Mixtral softmax top-k routing.

    Args:
      logits: (..., E) router logits; softmax is taken in fp32 over all experts.
      top_k: experts per token.
      norm_topk_prob: renormalise the k selected probabilities to sum to 1 (no epsilon: the
        top-k mass of a softmax is at least k/E). Mixtral corresponds to True.

    Returns:
      weights (..., k) fp32 and indices (..., k) int32, ordered by decreasing probability.
    """
    num_experts = logits.shape[-1]
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k={top_k} must lie in [1, num_experts={num_experts}]")
    logits = logits.astype(jnp.float32)
    if expert_mask is not None:  # softmax over the kept experts only
        logits = jnp.where(expert_mask > 0, logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1)
    weights, indices = jax.lax.top_k(probs, top_k)
    if norm_topk_prob:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    return weights, indices.astype(jnp.int32)


def expert_token_counts(
    indices: jax.Array, num_experts: int, token_mask: jax.Array | None = None
) -> jax.Array:
    """Number of tokens routed to each expert.

    Args:
      indices: (..., k) int expert indices from a router (distinct per token).
      num_experts: E (static).
      token_mask: optional (...) bool/0-1 mask; masked-out tokens (e.g. padding) are not counted.

    Returns:
      (E,) int32 counts; they sum to the number of counted tokens times k.
    """
    flat = indices.reshape(-1)
    weights = None
    if token_mask is not None:
        k = indices.shape[-1]
        weights = jnp.repeat(token_mask.reshape(-1).astype(jnp.int32), k)
    return jnp.bincount(flat, weights=weights, length=num_experts).astype(jnp.int32)


def _activate(h_up: jax.Array, h_gate: jax.Array | None) -> jax.Array:
    """relu(up)² when ``h_gate`` is None, else silu(gate) * up; inputs fp32."""
    if h_gate is None:
        return jnp.square(jax.nn.relu(h_up))
    return jax.nn.silu(h_gate) * h_up


def _check_experts(
    x: jax.Array,
    indices: jax.Array,
    w_up: jax.Array,
    w_down: jax.Array,
    w_gate: jax.Array | None,
) -> None:
    num_experts, d, f = w_up.shape
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x must be (n, {d}), got {x.shape}")
    if indices.ndim != 2 or indices.shape[0] != x.shape[0]:
        raise ValueError(f"indices must be (n={x.shape[0]}, k), got {indices.shape}")
    if w_down.shape != (num_experts, f, d):
        raise ValueError(f"w_down must be {(num_experts, f, d)}, got {w_down.shape}")
    if w_gate is not None and w_gate.shape != w_up.shape:
        raise ValueError(f"w_gate must be {w_up.shape}, got {w_gate.shape}")


def moe_dense(
    x: jax.Array,
    weights: jax.Array,
    indices: jax.Array,
    w_up: jax.Array,
    w_down: jax.Array,
    w_gate: jax.Array | None = None,
    *,
    observe: Observe | None = None,
) -> jax.Array:
    """Reference MoE: every expert on every token, combined by a dense (n, E) matrix.

    Args:
      x: (n, d) tokens.
      weights: (n, k) routing weights.
      indices: (n, k) int expert indices in [0, E).
      w_up: (E, d, F); w_down: (E, F, d); w_gate: optional (E, d, F), selects SwiGLU.

    Returns:
      (n, d) in x.dtype. Costs E/k times the routed FLOPs; for tests and tiny models.
    """
    _check_experts(x, indices, w_up, w_down, w_gate)
    dtype = x.dtype
    f32 = jnp.float32

    def rounded(a: jax.Array) -> jax.Array:
        # Operands rounded to x.dtype, products and sums in fp32 (exact for bf16 products).
        return a.astype(dtype).astype(f32)

    def mm(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST)

    xr = rounded(x)
    h_up = mm("nd,edf->enf", xr, rounded(w_up))
    h_gate = None if w_gate is None else mm("nd,edf->enf", xr, rounded(w_gate))
    h = rounded(_activate(h_up, h_gate))
    y = mm("enf,efd->end", h, rounded(w_down))

    n, num_experts = x.shape[0], w_up.shape[0]
    if observe is not None:  # per (token, expert) assignment, like moe_sorted
        experts, token_ids = indices.reshape(-1), jnp.repeat(jnp.arange(n), indices.shape[1])
        observe(Assignments(h[experts, token_ids], y[experts, token_ids], experts, token_ids))
    rows = jnp.broadcast_to(jnp.arange(n)[:, None], indices.shape)
    combine = jnp.zeros((n, num_experts), f32).at[rows, indices].add(weights.astype(f32))
    return mm("ne,end->nd", combine, y).astype(dtype)


def moe_sorted(
    x: jax.Array,
    weights: jax.Array,
    indices: jax.Array,
    w_up: jax.Array,
    w_down: jax.Array,
    w_gate: jax.Array | None = None,
    *,
    observe: Observe | None = None,
) -> jax.Array:
    """Sorted (grouped-GEMM) MoE dispatch, exact and without token dropping.

    The n*k (token, expert) assignments are stably sorted by expert, the token rows gathered
    into an (n*k, d) buffer, and ``jax.lax.ragged_dot`` runs each expert on its contiguous slice
    (group sizes from a length-E bincount). Outputs are scaled by their routing weights and
    scatter-added back to tokens in fp32. All shapes are static, so it jits and differentiates
    w.r.t. x, weights and the expert weights.

    Args:
      x: (n, d) tokens.
      weights: (n, k) routing weights.
      indices: (n, k) int expert indices in [0, E).
      w_up: (E, d, F); w_down: (E, F, d); w_gate: optional (E, d, F), selects SwiGLU.

    Returns:
      (n, d) in x.dtype, equal to :func:`moe_dense` up to float rounding.
    """
    _check_experts(x, indices, w_up, w_down, w_gate)
    dtype = x.dtype
    f32 = jnp.float32
    n, k = indices.shape
    num_experts = w_up.shape[0]

    flat_experts = indices.reshape(-1)
    order = jnp.argsort(flat_experts, stable=True)
    tokens = order // k
    group_sizes = jnp.bincount(flat_experts, length=num_experts).astype(jnp.int32)

    xs = x[tokens]
    h_up = jax.lax.ragged_dot(xs, w_up.astype(dtype), group_sizes, preferred_element_type=f32)
    h_gate = None
    if w_gate is not None:
        h_gate = jax.lax.ragged_dot(
            xs, w_gate.astype(dtype), group_sizes, preferred_element_type=f32
        )
    h = _activate(h_up, h_gate).astype(dtype)
    y = jax.lax.ragged_dot(h, w_down.astype(dtype), group_sizes, preferred_element_type=f32)
    if observe is not None:
        observe(Assignments(h, y, flat_experts[order], tokens))

    y = y * weights.reshape(-1)[order].astype(f32)[:, None]
    out = jax.ops.segment_sum(y, tokens, num_segments=n)
    return out.astype(dtype)
