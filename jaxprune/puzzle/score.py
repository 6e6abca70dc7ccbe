"""Scoring Puzzle's variants (arXiv 2411.19146, the scoring and BLD sections).

* :func:`replace_one_scores`: the zero-shot score of a variant is the damage done by
  putting it, alone, into the parent: KL(parent || parent with block i replaced), or the
  LM-loss increase, averaged over tokens. Every replacement is the parent under a mask,
  so one compiled forward serves the whole library, and the parent's logits are computed
  once per batch.
* :func:`block_distill`: blockwise local distillation. Each variant of block i is trained
  to reproduce the parent block's output from the parent block's input (normalized MSE),
  every variant of a block in one vmapped step and every block from the same parent
  forward. The trained weights are parent-shaped (masked), so
  :func:`replace_one_scores` rescoring and :func:`trained_parent` take them as they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxprune.nn.model import HybridLM
from jaxprune.ops.loss import token_nll
from jaxprune.pruning.masks import (
    Mask,
    activation_masks,
    mask_from_keep,
    masked_forward,
    param_mask,
)
from jaxprune.puzzle.library import Variant, assemble

METRICS = ("kl", "loss")

# {block: (variant indices trained, stacked block params (V, ...))}
BlockParams = dict[int, tuple[list[int], nnx.State]]


def _one_replaced(library: list[list[Variant]], i: int, v: Variant) -> list[Variant]:
    return [v if j == i else row[0] for j, row in enumerate(library)]


def variant_mask(parent: HybridLM, scores: dict, library: list[list[Variant]], v: Variant) -> Mask:
    """The parent's mask with only ``v``'s block replaced by ``v``."""
    return mask_from_keep(
        parent, assemble(parent.config, scores, _one_replaced(library, v.block, v))
    )


@jax.jit
def _reference(model, tokens):
    return jax.nn.log_softmax(model(tokens[:, :-1]).astype(jnp.float32), axis=-1)


@jax.jit
def _damage(model, mask, tokens, ref):
    """(KL(parent || masked), masked LM loss - parent LM loss), each a token mean."""
    logp = jax.nn.log_softmax(masked_forward(model, mask, tokens[:, :-1]), axis=-1)
    kl = jnp.mean(jnp.sum(jnp.exp(ref) * (ref - logp), axis=-1))
    target = tokens[:, 1:]
    nll = jnp.mean(token_nll(logp, target)) - jnp.mean(token_nll(ref, target))
    return kl, nll


def with_block(parent: HybridLM, i: int, block_state: nnx.State) -> HybridLM:
    """The parent with block ``i``'s parameters replaced (a new model; the parent is kept)."""
    graphdef, state = nnx.split(parent)
    state = jax.tree.map(lambda x: x, state)
    state["blocks"][i] = block_state
    return nnx.merge(graphdef, state)


def _pick(stacked: nnx.State, k: int) -> nnx.State:
    return jax.tree.map(lambda x: x[k], stacked)


def replace_one_scores(
    parent: HybridLM,
    scores: dict,
    library: list[list[Variant]],
    batches: Sequence[np.ndarray],
    *,
    metric: str = "kl",
    trained: BlockParams | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Per block, (n_variants,) scores (lower is better; the block as is scores 0).

    ``batches``: (b, T + 1) token ids. ``trained`` (from :func:`block_distill`): the
    variants it lists are scored with their trained weights in place of the parent's.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    tokens = [jnp.asarray(b, jnp.int32) for b in batches]
    refs = [_reference(parent, t) for t in tokens]
    trained = trained or {}
    out = [np.zeros(len(row)) for row in library]
    total = sum(len(row) - 1 for row in library)
    done = 0
    for i, row in enumerate(library):
        idx, stacked = trained.get(i, ([], None))
        for k, v in enumerate(row[1:], 1):
            model = parent
            if k in idx:
                model = with_block(parent, i, _pick(stacked, idx.index(k)))
            mask = variant_mask(parent, scores, library, v)
            vals = [_damage(model, mask, t, r) for t, r in zip(tokens, refs, strict=True)]
            out[i][k] = float(np.mean([float(d[METRICS.index(metric)]) for d in vals]))
            done += 1
            if progress is not None:
                progress(done, total)
    return out


def _block_masks(parent: HybridLM, mask: Mask, i: int, shapes: nnx.State):
    """Block ``i``'s parameter masks (full shapes, ones where no group applies) and its
    activation masks under ``mask``."""

    def one(path, leaf):
        name = f"blocks.{i}." + ".".join(str(p.key) for p in path if hasattr(p, "key"))
        m = param_mask(mask, name, leaf.shape)
        return jnp.ones(leaf.shape, leaf.dtype) if m is None else jnp.broadcast_to(m, leaf.shape)

    params = jax.tree_util.tree_map_with_path(one, shapes)
    return params, activation_masks(mask)["blocks"][i]


def _stack(trees: list):
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


@jax.jit
def _parent_io(model, tokens):
    """(L + 1, b, T, d): the residual stream entering each block, then the last output."""
    n = len(model.blocks)
    h0 = model.embed_tokens(tokens)
    _, outs = model.hidden_states(tokens, outputs=range(n))
    return jnp.stack([h0, *(outs[j] for j in range(n))]).astype(jnp.float32)


def _make_fns(graphdef, opt: optax.GradientTransformation):
    """(jitted vmapped train step, jitted vmapped local error) of one block's variants."""

    def loss(theta, pmask, amask, x, y, positions):
        block = nnx.merge(graphdef, jax.tree.map(lambda t, m: t * m, theta, pmask))
        out, _ = block(x, positions=positions, mask=amask)
        return jnp.sum((out - y) ** 2) / jnp.maximum(jnp.sum((y - x) ** 2), 1e-12)

    def one(theta, opt_state, pmask, amask, x, y, positions):
        value, grads = jax.value_and_grad(loss)(theta, pmask, amask, x, y, positions)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, value

    step = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None, None)))
    error = jax.jit(jax.vmap(loss, in_axes=(0, 0, 0, None, None, None)))
    return step, error


def block_distill(
    parent: HybridLM,
    scores: dict,
    library: list[list[Variant]],
    batches: Sequence[np.ndarray],
    *,
    steps: int,
    lr: float = 1e-3,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[BlockParams, dict[int, np.ndarray]]:
    """Train every shrunk variant (not the block as is, nor a removal) of every block for
    ``steps`` steps to reproduce the parent block's output from its input, cycling over
    ``batches`` (b, T) token ids; Adam with a cosine decay, no clipping, the same data for
    every variant. A variant whose local error did not go down keeps the parent's slice.

    Returns the trained parameters per block and, per block, (2, n_trained): each trained
    variant's local error (normalized MSE over all ``batches``) before and after."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    jobs = {}
    for i, row in enumerate(library):
        idx = [k for k, v in enumerate(row) if k > 0 and not v.removed]
        if not idx:
            continue
        graphdef, state = nnx.split(parent.blocks[i])
        masks = [_block_masks(parent, variant_mask(parent, scores, library, row[k]), i, state)
                 for k in idx]  # fmt: skip
        theta = _stack([state] * len(idx))
        step, error = _make_fns(graphdef, opt)
        jobs[i] = {
            "idx": idx,
            "theta": theta,
            "opt": jax.vmap(opt.init)(theta),
            "pmask": _stack([m[0] for m in masks]),
            "amask": _stack([m[1] for m in masks]),
            "step": step,
            "error": error,
        }
    tokens = [jnp.asarray(b, jnp.int32) for b in batches]

    def positions(t):
        return jnp.broadcast_to(jnp.arange(t.shape[1], dtype=jnp.int32), t.shape)

    def errors() -> dict[int, np.ndarray]:
        out = {i: 0.0 for i in jobs}
        for t in tokens:
            io = _parent_io(parent, t)
            for i, j in jobs.items():
                e = j["error"](j["theta"], j["pmask"], j["amask"], io[i], io[i + 1], positions(t))
                out[i] = out[i] + np.asarray(e) / len(tokens)
        return out

    before = errors()
    for s in range(steps):
        t = tokens[s % len(tokens)]
        io = _parent_io(parent, t)
        for i, j in jobs.items():
            j["theta"], j["opt"], _ = j["step"](
                j["theta"], j["opt"], j["pmask"], j["amask"], io[i], io[i + 1], positions(t)
            )
        if progress is not None:
            progress(s + 1, steps)
    after = errors()
    trained = {}
    for i, j in jobs.items():
        better = jnp.asarray(after[i] < before[i])
        init = _stack([nnx.split(parent.blocks[i])[1]] * len(j["idx"]))
        theta = jax.tree.map(functools.partial(_keep_better, better), j["theta"], init)
        trained[i] = (j["idx"], theta)
        after[i] = np.minimum(after[i], before[i])
    return trained, {i: np.stack([before[i], after[i]]) for i in jobs}


def _keep_better(better: jax.Array, trained: jax.Array, init: jax.Array) -> jax.Array:
    """Per variant (the leading axis): the trained value where ``better``, else ``init``."""
    return jnp.where(better.reshape((-1,) + (1,) * (trained.ndim - 1)), trained, init)


def trained_parent(parent: HybridLM, choice: Sequence[int], trained: BlockParams) -> HybridLM:
    """The parent with each chosen variant's trained block weights in place (``choice``:
    per block the variant's index in its library row; blocks whose variant was not trained
    keep the parent's). Slice it with the choice's kept indices."""
    graphdef, state = nnx.split(parent)
    state = jax.tree.map(lambda x: x, state)
    for i, k in enumerate(choice):
        idx, stacked = trained.get(i, ([], None))
        if k in idx:
            state["blocks"][i] = _pick(stacked, idx.index(k))
    return nnx.merge(graphdef, state)
