"""Activation-based importance (Minitron): calibration statistics as running fp32 sums.

One jitted function per batch runs the model with a ``tap`` that reduces every tapped
activation (a typed record of ``jaxprune.nn.taps``, dispatched on its type) to a
per-channel sum on the spot, so nothing is kept per token. Aggregations
(``aggregation``), with a_b = mean over the valid tokens of sample b of |A|:

* ``l2`` (default, ModelOpt / Minitron): acc += sum_b a_b^2, score = sqrt(acc)
* ``mean``: acc += sum_b a_b, score = acc / samples
* ``mean_sq`` (Nemotron Elastic, E[s^2]): acc += sum_tokens A^2, score = acc / tokens

Per group: ``hidden`` sums the per-hook scores of every block's normed input and the final
norm; ``mlp`` / ``shared_mlp``: the down projection's input; ``heads``: the o_proj input
per head (L2 over head_dim); ``mamba_x``: in_proj's x slice (heads, head_dim); experts: the
mean per-token L2 of each expert's output over the tokens routed to it (plus router counts);
``expert_mlp``: mean |hidden| over routed tokens; depth: block influence (1 - cos between
the residual stream before and after each block).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.config import MoEConfig
from jaxprune.nn.model import HybridLM
from jaxprune.nn.taps import (
    BlockInput,
    BlockIO,
    DMCDecisions,
    ExpertHidden,
    ExpertOutputs,
    FinalHidden,
    HeadOutputs,
    MambaX,
    MLPHidden,
    Record,
    Routing,
    Tap,
)

AGGREGATIONS = ("l2", "mean", "mean_sq")


def _per_sample(a: jax.Array, valid: jax.Array, aggregation: str) -> jax.Array:
    """a (b, T, ...), valid (b, T) -> the accumulator increment (...)."""
    v = valid.astype(jnp.float32).reshape(valid.shape + (1,) * (a.ndim - 2))
    a = a.astype(jnp.float32)
    if aggregation == "mean_sq":
        return jnp.sum(a * a * v, axis=(0, 1))
    n = jnp.maximum(jnp.sum(v, axis=1), 1.0)  # (b, 1...)
    mean_abs = jnp.sum(jnp.abs(a) * v, axis=1) / n
    return jnp.sum(mean_abs**2 if aggregation == "l2" else mean_abs, axis=0)


def _block(i: int) -> str:
    return f"blocks.{i}."


def _reducer(
    out: dict[str, jax.Array], valid: jax.Array, experts: dict[int, int], aggregation: str
) -> Tap:
    """The tap that adds each record's statistics into ``out``. valid (b, T) bool;
    ``experts``: {MoE block index: number of routed experts}."""
    flat_valid = valid.reshape(-1).astype(jnp.float32)

    def tap(r: Record) -> None:
        match r:
            case FinalHidden(h=h):
                out["final_hidden"] = _per_sample(h, valid, aggregation)
            case BlockInput(x=x, block=i):
                out[_block(i) + "hidden"] = _per_sample(x, valid, aggregation)
            case MLPHidden(h=h, shared=shared, block=i):
                name = "shared_mlp" if shared else "mlp"
                out[_block(i) + name] = _per_sample(h, valid, aggregation)
            case HeadOutputs(out=heads, block=i):
                out[_block(i) + "heads"] = _per_sample(heads, valid, aggregation)
            case MambaX(x=x, block=i):
                out[_block(i) + "mamba_x"] = _per_sample(x, valid, aggregation)
            case BlockIO(h_in=h_in, h_out=h_out, block=i):
                h_in, h_out = h_in.astype(jnp.float32), h_out.astype(jnp.float32)
                cos = jnp.sum(h_in * h_out, -1) / jnp.maximum(
                    jnp.linalg.norm(h_in, axis=-1) * jnp.linalg.norm(h_out, axis=-1), 1e-12
                )
                out[_block(i) + "io"] = jnp.stack([jnp.sum((1 - cos) * valid), jnp.sum(valid)])
            case ExpertOutputs(y=y, expert=expert, token=token, block=i):
                w, e = flat_valid[token], experts[i]
                norms = jnp.linalg.norm(y.astype(jnp.float32), axis=-1) * w
                out[_block(i) + "expert_out"] = jax.ops.segment_sum(norms, expert, num_segments=e)
                out[_block(i) + "expert_count"] = jax.ops.segment_sum(w, expert, num_segments=e)
            case ExpertHidden(h=h, token=token, block=i):
                w = flat_valid[token]
                out[_block(i) + "expert_mlp"] = jnp.sum(
                    jnp.abs(h.astype(jnp.float32)) * w[:, None], axis=0
                )
                out[_block(i) + "expert_mlp_count"] = jnp.sum(w)
            case Routing(indices=idx, weights=weights, block=i):
                w = jnp.repeat(flat_valid, idx.shape[-1])
                out[_block(i) + "router_weight"] = jax.ops.segment_sum(
                    weights.reshape(-1) * w, idx.reshape(-1), num_segments=experts[i]
                )
            case DMCDecisions():  # a DMC block's cache decisions: no importance in them
                pass
            case _:
                raise TypeError(f"calibration: no statistic for tap record {type(r).__name__}")

    return tap


def make_stats_fn(model: HybridLM, aggregation: str = "l2"):
    """A jitted ``fn(state, tokens (b,T), valid (b,T)) -> {stat name: fp32 sums}``."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r}; choose from {AGGREGATIONS}")
    graphdef = nnx.graphdef(model)
    experts = {
        i: layer.num_experts
        for i, layer in enumerate(model.config.layers)
        if isinstance(layer, MoEConfig)
    }

    @jax.jit
    def stats(state, tokens, valid):
        out: dict[str, jax.Array] = {}
        nnx.merge(graphdef, state)(tokens, tap=_reducer(out, valid, experts, aggregation))
        out["samples"] = jnp.sum(jnp.any(valid, axis=1).astype(jnp.float32))
        out["tokens"] = jnp.sum(valid.astype(jnp.float32))
        return out

    return stats


def calibrate(
    model: HybridLM,
    batches,
    *,
    aggregation: str = "l2",
    progress: bool = False,
    shardings=None,
) -> dict[str, np.ndarray]:
    """Run every batch ((b, T) int tokens, or (tokens, valid)) and return the summed stats.

    ``shardings``: optional (tokens sharding) to place each batch, e.g. batch-sharded over a
    mesh; the sums then add up across devices inside the jitted reduction.
    """
    fn = make_stats_fn(model, aggregation)
    state = nnx.state(model)
    acc: dict[str, jax.Array] | None = None
    it = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc="calibration", unit="batch")
    for batch in it:
        tokens, valid = batch if isinstance(batch, tuple) else (batch, np.ones(batch.shape, bool))
        tokens, valid = jnp.asarray(tokens, jnp.int32), jnp.asarray(valid, bool)
        if shardings is not None and tokens.shape[0] % len(shardings.device_set) == 0:
            tokens, valid = jax.device_put(tokens, shardings), jax.device_put(valid, shardings)
        s = fn(state, tokens, valid)
        acc = s if acc is None else jax.tree.map(jnp.add, acc, s)
    if acc is None:
        raise ValueError("calibration needs at least one batch")
    return {k: np.asarray(v) for k, v in acc.items()}


def scores(stats: dict[str, np.ndarray], model: HybridLM, aggregation: str = "l2") -> dict:
    """Per-group importance scores from calibration sums (higher = more important).

    Returns {group name: score array}: ``hidden`` (d,), ``blocks.<i>.mlp`` (F,),
    ``.heads`` (Hq,), ``.mamba`` (H, P), ``.experts`` (E,), ``.expert_mlp`` (F_e,),
    ``.shared_mlp`` (F_s,), and ``depth_block_influence`` (L,).
    """

    def finish(acc: np.ndarray) -> np.ndarray:
        if aggregation == "l2":
            return np.sqrt(acc)
        n = stats["samples"] if aggregation == "mean" else stats["tokens"]
        return acc / max(float(n), 1.0)

    out: dict[str, np.ndarray] = {}
    hidden = finish(stats["final_hidden"])
    for i in range(len(model.config.layers)):
        b = f"blocks.{i}."
        hidden = hidden + finish(stats[b + "hidden"])
        if b + "mlp" in stats:
            out[b + "mlp"] = finish(stats[b + "mlp"])
        if b + "heads" in stats:
            out[b + "heads"] = np.linalg.norm(finish(stats[b + "heads"]), axis=-1)
        if b + "mamba_x" in stats:
            out[b + "mamba"] = finish(stats[b + "mamba_x"])
        if b + "expert_out" in stats:
            out[b + "experts"] = stats[b + "expert_out"] / (stats[b + "expert_count"] + 1e-8)
            out[b + "expert_mlp"] = stats[b + "expert_mlp"] / max(
                float(stats[b + "expert_mlp_count"]), 1.0
            )
            out[b + "router_count"] = stats[b + "expert_count"]
        if b + "shared_mlp" in stats:
            out[b + "shared_mlp"] = finish(stats[b + "shared_mlp"])
    out["hidden"] = hidden
    io = np.stack([stats[f"blocks.{i}.io"] for i in range(len(model.config.layers))])
    out["depth_block_influence"] = io[:, 0] / np.maximum(io[:, 1], 1.0)
    return out
