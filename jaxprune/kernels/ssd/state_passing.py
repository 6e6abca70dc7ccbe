"""Inter-chunk state passing (forward) and the reverse state pass (backward), as XLA scans.

These are sequential over chunks but elementwise per step: c steps of a fused multiply-add on
(b, H, Pp, Np) fp32, i.e. pure bandwidth with no matmul work. XLA runs each as one while loop
over chunk-major arrays (no transposes). An in-kernel loop would not move fewer bytes as long
as the per-chunk states are materialised by the chunk kernels; removing that round trip needs
the fused (state-on-chip) design, which is the natural next step for a Hopper variant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def pass_states(states: Array, decay: Array, h0: Array) -> tuple[Array, Array]:
    """H_0 = h0, H_{c+1} = decay_c H_c + S_c.

    states (c, b, H, P, N), decay (c, b, H), h0 (b, H, P, N), all fp32 ->
    (prev (c, b, H, P, N) = H_c, the state entering each chunk; final H_c (b, H, P, N)).
    """

    def body(carry: Array, inp: tuple[Array, Array]) -> tuple[Array, Array]:
        dec, s = inp
        return dec[..., None, None] * carry + s, carry

    final, prev = lax.scan(body, h0, (decay, states))
    return prev, final


def pass_states_reverse(
    dprev: Array, decay: Array, prev: Array, dfinal: Array
) -> tuple[Array, Array, Array]:
    """Transpose of `pass_states`: dH_c = dprev_c + decay_c dH_{c+1}, from dH_{#chunks} = dfinal.

    dprev, prev (c, b, H, P, N), decay (c, b, H), dfinal (b, H, P, N) ->
    (dstates (c, b, H, P, N) = dH_{c+1}, ddecay (c, b, H) = <H_c, dH_{c+1}>, dh0 (b, H, P, N)).
    """

    def body(dh: Array, inp: tuple[Array, Array, Array]) -> tuple[Array, tuple[Array, Array]]:
        dec, p, dp = inp
        ddec = jnp.sum(p * dh, axis=(-2, -1))
        return dp + dec[..., None, None] * dh, (dh, ddec)

    dh0, (dstates, ddecay) = lax.scan(body, dfinal, (decay, prev, dprev), reverse=True)
    return dstates, ddecay, dh0
