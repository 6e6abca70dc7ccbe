"""The jitted train and eval steps: pure functions of plain pytrees.

A model enters as ``nnx.split(model, nnx.Param, ...)`` -> (graphdef, params, rest): params
are trained, ``rest`` (e.g. MoE correction biases) is constant. The train state is a dict

    {"params": {"model": nnx.State, ["proj": (d_s, d_t)], [view params]}, "opt_state": ...,
     "rng": uint32 key data, "step": int32 scalar}

and one optimizer step is ``step_fn(state, rest, teacher_params, batch) -> (state, metrics)``
with ``batch`` arrays of shape (grad_accum, micro_batch, T).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune import sharding
from jaxprune.nn.model import HybridLM
from jaxprune.train.config import LossConfig, TrainConfig
from jaxprune.train.fused_loss import LMHead, fused_logit_losses, supports
from jaxprune.train.losses import chunked_logit_losses, combine_losses, intermediate_loss
from jaxprune.train.view import StudentView, View, zeros_like_metrics

BATCH_KEYS = ("tokens", "targets", "loss_mask", "seq_idx", "positions")
StepFn = Callable[..., tuple[dict, dict]]


@dataclass(frozen=True)
class SplitModel:
    """A split model: ``graphdef``, trainable ``params`` and constant ``rest`` state."""

    graphdef: Any
    params: nnx.State
    rest: nnx.State

    @classmethod
    def of(cls, model: HybridLM) -> SplitModel:
        return cls(*nnx.split(model, nnx.Param, ...))


def hidden_states(
    model: HybridLM,
    batch: dict[str, jax.Array],
    keep: Sequence[int] = (),
    remat: bool = False,
    masks: dict | None = None,
    view: View | None = None,
) -> tuple[jax.Array, dict[int, jax.Array]]:
    """``model.hidden_states`` of a packed batch: -> final hidden (b, T, d) (before the final
    norm) and {block index: its output (b, T, d)} for the (non-negative) indices in ``keep``;
    ``remat``: blocks rematerialised in the backward; ``masks``: activation masks;
    ``view``: its ``relax`` and ``tap`` go to the forward."""
    return model.hidden_states(
        batch["tokens"],
        positions=batch["positions"],
        seq_idx=batch["seq_idx"],
        masks=masks,
        outputs=keep,
        remat=remat,
        relax=None if view is None else view.relax,
        tap=None if view is None else view.tap,
    )


def _norm_index(i: int, n: int) -> int:
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise ValueError(f"intermediate layer {i} out of range for {n} blocks")
    return j


def layer_pairs(loss: LossConfig, n_student: int, n_teacher: int) -> tuple[tuple[int, int], ...]:
    """``loss.intermediate`` with negative indices resolved (checked against the depths)."""
    return tuple(
        (_norm_index(s, n_student), _norm_index(t, n_teacher)) for s, t in loss.intermediate
    )


def micro_losses(
    trainable: dict,
    rest: nnx.State,
    teacher_state: nnx.State | None,
    batch: dict[str, jax.Array],
    count: jax.Array,
    key: jax.Array | None = None,
    step: jax.Array | None = None,
    *,
    student_def: Any,
    teacher_def: Any | None,
    loss: LossConfig,
    fused: bool = False,
    remat: bool = False,
    view: StudentView | None = None,
    n_micro: int = 1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Objective of one micro-batch (b, T), normalized by ``count`` tokens of the whole step.

    ``trainable`` = {"model": student params, ["proj"]}; ``rest`` the student's constant
    state; ``teacher_state`` the teacher's whole ``nnx.split`` state (frozen). ``fused``:
    the analytic-gradient logit losses where they apply (see :func:`logit_losses`);
    ``remat``: the student's blocks rematerialised in the backward (the teacher keeps none).
    ``view`` (:mod:`jaxprune.train.view`) chooses what runs (given ``key`` and the optimizer
    ``step``; the same for every micro-batch of a step); its extra loss and metrics count
    once per step (divided by ``n_micro``). Returns (loss, {"kl", "ce", "inter", *view
    metrics}) fp32 scalars."""
    v = (view or StudentView())(
        trainable, nnx.merge(student_def, trainable["model"], rest), key, step
    )
    model = v.model
    nblocks = len(model.blocks)
    pairs = ()
    t_model = None
    if teacher_def is not None:
        t_model = nnx.merge(teacher_def, teacher_state)
        pairs = layer_pairs(loss, nblocks, len(t_model.blocks))
    hs, kept_s = hidden_states(model, batch, [s for s, _ in pairs], remat, v.masks, v)
    view_extra, view_metrics = v.extra, dict(v.metrics or {})
    if v.after is not None:
        more, more_metrics = v.after(batch)
        view_extra, view_metrics = view_extra + more, {**view_metrics, **more_metrics}
    ht, kept_t = None, {}
    if t_model is not None:
        ht, kept_t = hidden_states(t_model, batch, [t for _, t in pairs])
        ht, kept_t = jax.lax.stop_gradient((ht, kept_t))
    mask = batch["loss_mask"].astype(jnp.float32)
    if v.masks is None:
        sums = logit_losses(model, t_model, hs, ht, batch["targets"], mask, loss, fused)
    else:  # the final norm runs over the kept hidden channels only
        head = functools.partial(model.logits, hidden_mask=v.masks.get("hidden"))
        t_head = None if t_model is None else t_model.logits
        sums = chunked_logit_losses(hs, head, batch["targets"], mask, loss, ht, t_head)
    inter = None
    if pairs:
        proj = trainable.get("proj")
        terms = [
            intermediate_loss(kept_s[s], kept_t[t], mask, loss.intermediate_loss, proj)
            for s, t in pairs
        ]
        inter = sum(terms) / (len(terms) * count)
    kl, ce = sums["kl"] / count, sums["ce"] / count
    total = combine_losses(kl, ce, inter, loss) + view_extra / n_micro
    parts = {"kl": kl, "ce": ce, "inter": jnp.zeros(()) if inter is None else inter}
    extra = {k: jnp.asarray(x, jnp.float32) / n_micro for k, x in view_metrics.items()}
    return total, {**parts, **extra}


def logit_losses(
    model: HybridLM,
    t_model: HybridLM | None,
    hs: jax.Array,
    ht: jax.Array | None,
    targets: jax.Array,
    mask: jax.Array,
    loss: LossConfig,
    fused: bool = False,
) -> dict[str, jax.Array]:
    """Token sums {"kl", "ce"} of the logit losses: the fused analytic-gradient version
    (``jaxprune.train.fused_loss``) when ``fused`` and it applies, else the generic chunked
    one (``jaxprune.train.losses.chunked_logit_losses``, remat of both heads; the default:
    on 2 CPU cores the fused loss was 3% faster for bench-10m's 8k vocabulary but 10% slower
    for a 135M Llama's 49k one, BENCHMARKS.md)."""
    if fused and supports(loss):
        head, hp = LMHead.of(model)
        t_head, t_hp = LMHead.of(t_model) if t_model is not None else (None, None)
        return fused_logit_losses(head, hp, hs, targets, mask, loss, t_head, t_hp, ht)
    t_logits = None if t_model is None else t_model.logits
    return chunked_logit_losses(hs, model.logits, targets, mask, loss, ht, t_logits)


def _head_grad_norm(grads: dict) -> jax.Array:
    g = grads["model"]
    return optax.tree.norm(g["lm_head"] if "lm_head" in g else g["embed"])


def make_step_fn(
    student_def: Any,
    teacher_def: Any | None,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss: LossConfig,
    fused_loss: bool = False,
    remat: bool = False,
    view: StudentView | None = None,
) -> StepFn:
    """The un-jitted step ``(state, rest, teacher_state, batch) -> (state, metrics)``.

    Gradients are summed over the micro-batches (``lax.scan``) of a token-normalized loss.
    A non-finite loss or gradient norm leaves params and optimizer state unchanged
    (``metrics["skipped"] = 1``); the step counter and rng advance regardless.
    """

    view = view or StudentView()

    def step(state: dict, rest: nnx.State, teacher_state, batch: dict) -> tuple[dict, dict]:
        count = jnp.maximum(jnp.sum(batch["loss_mask"].astype(jnp.float32)), 1.0)
        key = jax.random.wrap_key_data(state["rng"])
        grad_fn = jax.value_and_grad(
            functools.partial(
                micro_losses,
                student_def=student_def,
                teacher_def=teacher_def,
                loss=loss,
                fused=fused_loss,
                remat=remat,
                view=view,
                n_micro=batch["tokens"].shape[0],
            ),
            has_aux=True,
        )
        view_key = jax.random.fold_in(key, 1)

        def accumulate(carry, micro):
            grads, tot, parts = carry
            (l, p), g = grad_fn(
                state["params"], rest, teacher_state, micro, count, view_key, state["step"]
            )
            return (
                jax.tree.map(jnp.add, grads, g),
                tot + l,
                jax.tree.map(jnp.add, parts, p),
            ), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state["params"])
        parts0 = {k: jnp.zeros((), jnp.float32) for k in ("kl", "ce", "inter")}
        parts0.update(zeros_like_metrics(view))
        (grads, total, parts), _ = jax.lax.scan(
            accumulate, (zeros, jnp.zeros((), jnp.float32), parts0), batch
        )
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state["params"])
        gnorm = optax.tree.norm(grads)
        ok = jnp.isfinite(total) & jnp.isfinite(gnorm)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        new_state = {
            "params": keep(params, state["params"]),
            "opt_state": keep(opt_state, state["opt_state"]),
            "rng": jax.random.key_data(jax.random.split(key)[0]),
            "step": state["step"] + 1,
        }
        metrics = {
            "loss": total,
            **parts,
            "grad_norm": gnorm,
            "head_grad_norm": _head_grad_norm(grads),
            "lr": jnp.asarray(schedule(state["step"]), jnp.float32),
            "skipped": jnp.logical_not(ok).astype(jnp.int32),
            "tokens": count,
        }
        return new_state, metrics

    return step


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_shardings(mesh: Mesh) -> dict[str, NamedSharding]:
    """(grad_accum, micro_batch, T) arrays: the micro-batch dim over the rules' batch axes."""
    spec = sharding.batch_sharding(mesh).spec
    return {k: NamedSharding(mesh, PartitionSpec(None, *spec)) for k in BATCH_KEYS}


def params_shardings(params: nnx.State, mesh: Mesh) -> nnx.State:
    return sharding.state_shardings(params, mesh)


def train_state_shardings(
    abstract_state: dict, student_params_sh: nnx.State, tx: optax.GradientTransformation, mesh: Mesh
) -> dict:
    """Shardings of the train state: params by the logical rules, optimizer moments like
    their params, everything else replicated."""
    rep = replicated(mesh)
    params_sh = {"model": student_params_sh}
    for name in abstract_state["params"]:  # the projection, a view's parameters: replicated
        if name != "model":
            params_sh[name] = jax.tree.map(lambda _: rep, abstract_state["params"][name])
    opt_sh = optax.tree_map_params(
        tx,
        lambda _, s: s,
        abstract_state["opt_state"],
        params_sh,
        transform_non_params=lambda _: rep,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    return {"params": params_sh, "opt_state": opt_sh, "rng": rep, "step": rep}


def make_train_step(
    student: SplitModel,
    teacher: tuple[Any, nnx.State] | None,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    cfg: TrainConfig,
    mesh: Mesh,
    state_sh: dict,
    fused_loss: bool = False,
    view: StudentView | None = None,
) -> StepFn:
    """``jax.jit`` of :func:`make_step_fn` with in/out shardings; the state is donated."""
    fn = make_step_fn(
        student.graphdef,
        None if teacher is None else teacher[0],
        tx,
        schedule,
        cfg.loss,
        fused_loss,
        cfg.remat == "block",
        view,
    )
    rest_sh = params_shardings(student.rest, mesh)
    teacher_sh = None if teacher is None else params_shardings(teacher[1], mesh)
    return jax.jit(
        fn,
        in_shardings=(state_sh, rest_sh, teacher_sh, batch_shardings(mesh)),
        out_shardings=(state_sh, replicated(mesh)),
        donate_argnums=(0,),
    )


def make_eval_step(student_def: Any, teacher_def: Any | None, loss: LossConfig) -> Callable:
    """Jitted ``(params, rest, teacher_state, batch (b, T)) -> {"ce", "kl", "tokens"}`` token
    sums: next-token cross-entropy and forward KL to the teacher at T = 1."""
    kind = "none" if teacher_def is None else "forward"
    eval_loss = LossConfig(kl=kind, ce_weight=1.0, chunk=loss.chunk)

    @jax.jit
    def run(params, rest, teacher_state, batch):
        model = nnx.merge(student_def, params, rest)
        hs, _ = hidden_states(model, batch)
        ht, head = None, None
        if teacher_def is not None:
            t_model = nnx.merge(teacher_def, teacher_state)
            ht, _ = hidden_states(t_model, batch)
            head = t_model.logits
        mask = batch["loss_mask"].astype(jnp.float32)
        sums = chunked_logit_losses(hs, model.logits, batch["targets"], mask, eval_loss, ht, head)
        return {**sums, "tokens": jnp.sum(mask)}

    return run
