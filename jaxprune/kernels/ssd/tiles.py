"""Tile-level math used inside the SSD Pallas kernels (pure jnp on values, no refs).

Restricted to what the Triton lowering supports: 1-D iota, elementwise ops, 2-D dots with
dims >= 16, reductions and a forward cumsum. Every decay is exp(min(delta, 0)) of a
difference of cumulative log-decays, so no exponent can overflow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

# Without HIGHEST, Triton computes fp32 x fp32 dots in TF32; bf16 operands are unaffected.
_HIGHEST = lax.Precision.HIGHEST


def mm(a: Array, b: Array, contract: tuple[int, int] = (1, 0)) -> Array:
    """2-D dot with fp32 accumulation; ``contract`` names the contracted axis of a and of b."""
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(a, b, dims, precision=_HIGHEST, preferred_element_type=jnp.float32)


def neg_exp(v: Array) -> Array:
    """exp(min(v, 0)): a decay factor in [0, 1] that never overflows."""
    return jnp.exp(jnp.minimum(v, 0.0))


def row_col(q: int) -> tuple[Array, Array]:
    """(Q, 1) row and (1, Q) column indices."""
    idx = jnp.arange(q, dtype=jnp.int32)
    return idx[:, None], idx[None, :]


def intra_mask(seg: Array) -> Array:
    """(Q, Q) bool: row m sees column k iff k <= m and both are in the same segment."""
    row, col = row_col(seg.shape[0])
    return (row >= col) & (seg[:, None] == seg[None, :])


def decay_matrix(lam: Array, mask: Array) -> Array:
    """L[m, k] = exp(min(lam_m - lam_k, 0)) where ``mask``, else 0. lam (Q,) -> (Q, Q)."""
    return jnp.where(mask, neg_exp(lam[:, None] - lam[None, :]), 0.0)


def state_weights(lam: Array, lam_last: Array, seg: Array, seg_last: Array) -> Array:
    """w_k = exp(min(lam_last - lam_k, 0)) for positions in the chunk's last segment, else 0."""
    return jnp.where(seg == seg_last, neg_exp(lam_last - lam), 0.0)


def prev_weights(lam: Array, seg: Array) -> Array:
    """e_m = exp(min(lam_m, 0)) for rows still in the segment entering the chunk, else 0."""
    return jnp.where(seg == 0, neg_exp(lam), 0.0)


def suffix_sum(v: Array) -> Array:
    """out_j = sum_{m >= j} v_m for v (Q,) (a masked sum: no cancellation)."""
    row, col = row_col(v.shape[0])
    return jnp.sum(jnp.where(row >= col, v[:, None], 0.0), axis=0)


def prefix_sum_exclusive(v: Array) -> Array:
    """out_i = sum_{j < i} v_j for v (Q,) (a masked sum: no cancellation)."""
    row, col = row_col(v.shape[0])
    return jnp.sum(jnp.where(col < row, v[None, :], 0.0), axis=1)


def rectangle_sum(z: Array) -> Array:
    """out_j = sum_{m >= j} sum_{k < j} z[m, k] for z (Q, Q): the gradient of the per-step log
    decay a_j, which sits in every lam_m - lam_k with k < j <= m (ssd.md section 6.9). A row
    cumsum then a masked column sum; no reverse cumsum of large opposite terms."""
    row, col = row_col(z.shape[0])
    before = jnp.cumsum(z, axis=1) - z  # sum_{k < j} z[m, k] at (m, j)
    return jnp.sum(jnp.where(row >= col, before, 0.0), axis=0)


def silu(z: Array) -> Array:
    """z * sigmoid(z) with the sigmoid written out (exp(-z) = inf gives 0, not NaN)."""
    return z / (1.0 + jnp.exp(-z))
