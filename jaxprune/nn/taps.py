"""Typed taps: the intermediate activations a model reports to a ``tap`` callback.

``model(tokens, tap=fn)`` calls ``fn(record)`` at trace time with one frozen record per
tapped activation (calibration reduces them to statistics on the spot). Mixers do not know
their position, so they emit records with ``block=-1`` and :func:`at_block` fills in the
block index on the way out of each block; every record the caller of ``HybridLM`` sees
carries its block index (``FinalHidden`` excepted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import jax


@dataclass(frozen=True)
class BlockInput:
    """The block's normed input (b, T, d) that feeds its mixer."""

    x: jax.Array
    block: int = -1


@dataclass(frozen=True)
class MLPHidden:
    """The down projection's input (b, T, F); ``shared``: of an MoE block's shared expert."""

    h: jax.Array
    shared: bool = False
    block: int = -1


@dataclass(frozen=True)
class HeadOutputs:
    """Attention output per head before o_proj (b, T, Hq, head_dim)."""

    out: jax.Array
    block: int = -1


@dataclass(frozen=True)
class MambaX:
    """The x slice of Mamba2's input projection (b, T, H, P)."""

    x: jax.Array
    block: int = -1


@dataclass(frozen=True)
class ExpertOutputs:
    """Unweighted routed-expert outputs (m, d), one row per (token, expert) assignment,
    with the ``expert`` (m,) and flat ``token`` (m,) index of each row."""

    y: jax.Array
    expert: jax.Array
    token: jax.Array
    block: int = -1


@dataclass(frozen=True)
class ExpertHidden:
    """Routed-expert MLP hidden (m, F) per assignment, indexed like :class:`ExpertOutputs`."""

    h: jax.Array
    expert: jax.Array
    token: jax.Array
    block: int = -1


@dataclass(frozen=True)
class Routing:
    """Router choice per flat token: expert ``indices`` (n, k) and ``weights`` (n, k)."""

    indices: jax.Array
    weights: jax.Array
    block: int = -1


@dataclass(frozen=True)
class DMCDecisions:
    """A DMC block's merge decisions alpha (b, T, Hkv) fp32 (relaxed in training, 0/1
    otherwise) and ``real`` (b, T) bool (False: left padding)."""

    alpha: jax.Array
    real: jax.Array
    block: int = -1


@dataclass(frozen=True)
class BlockIO:
    """The residual stream before (``h_in``) and after (``h_out``) the block, (b, T, d)."""

    h_in: jax.Array
    h_out: jax.Array
    block: int = -1


@dataclass(frozen=True)
class FinalHidden:
    """The final-normed hidden state (b, T, d) that feeds the LM head."""

    h: jax.Array


Record = (
    BlockInput
    | MLPHidden
    | HeadOutputs
    | MambaX
    | ExpertOutputs
    | ExpertHidden
    | Routing
    | DMCDecisions
    | BlockIO
    | FinalHidden
)
Tap = Callable[[Record], None]


def at_block(tap: Tap | None, block: int) -> Tap | None:
    """``tap`` with ``block`` set on every record passed through it."""
    if tap is None:
        return None
    return lambda record: tap(dataclasses.replace(record, block=block))


def as_shared(tap: Tap | None) -> Tap | None:
    """``tap`` marking the :class:`MLPHidden` records of a shared expert."""
    if tap is None:
        return None
    return lambda record: tap(dataclasses.replace(record, shared=True))


__all__ = [
    "BlockIO",
    "BlockInput",
    "DMCDecisions",
    "ExpertHidden",
    "ExpertOutputs",
    "FinalHidden",
    "HeadOutputs",
    "MLPHidden",
    "MambaX",
    "Record",
    "Routing",
    "Tap",
    "at_block",
    "as_shared",
]
