"""The training loop: owns the IO (data, checkpoints, logging, signals) around the jitted step.

:func:`run` trains ``student`` for ``cfg.steps`` optimizer steps, distilling from
``teacher`` when one is given (else plain cross-entropy), and leaves ``out`` as a model:

    out/jaxprune.json, out/params/    the final student (native checkpoint)
    out/checkpoints/<step>/           resumable orbax checkpoints (every ``save_every``)
    out/metrics.jsonl                 train / eval metrics, one JSON object a line

``resume=True`` continues from the newest checkpoint exactly: same data order, same updates,
bitwise-equal parameters on CPU. SIGTERM saves a checkpoint and returns ``"preempted"``.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from jaxprune import sharding
from jaxprune.atomic import atomic_write_text
from jaxprune.data import make_eval_batches, make_train_iterator
from jaxprune.data.packing import PackedRows
from jaxprune.data.pipeline import check_one_batch
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.sharding import make_mesh
from jaxprune.train.checkpoint import Checkpoints, export_model
from jaxprune.train.config import RESUMABLE_CHANGES, TrainConfig
from jaxprune.train.optim import make_optimizer, make_schedule
from jaxprune.train.runlog import RunLogger
from jaxprune.train.state import abstract_state, init_state, place, retype
from jaxprune.train.step import (
    BATCH_KEYS,
    SplitModel,
    batch_shardings,
    make_eval_step,
    make_train_step,
    params_shardings,
    train_state_shardings,
)
from jaxprune.train.view import StudentView


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass(frozen=True)
class RunResult:
    """``status`` is ``"done"`` or ``"preempted"``; ``step`` the steps completed."""

    status: str
    step: int
    train: dict[str, float]
    eval: dict[str, float] | None
    skipped: int


class _Preemption:
    """Records SIGTERM while installed (main thread only); all processes agree on it."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self) -> _Preemption:
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        self.flag = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self.flag
        flags = multihost_utils.process_allgather(np.asarray(self.flag))
        return bool(np.any(flags))

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _check_out(out: Path, resume: bool) -> None:
    """Refuse a file or (without ``resume``) a non-empty directory. With several processes
    every process checks before any of them writes (the allgather is the barrier), and all
    refuse when one does."""
    err = None
    if out.is_file():
        err = UserError(f"output {out} is a file")
    elif not resume and out.is_dir() and any(out.iterdir()):
        err = UserError(f"output directory {out} is not empty; pass --resume to continue a run")
    if jax.process_count() > 1:
        refused = multihost_utils.process_allgather(np.asarray(err is not None))
        if err is None and bool(np.any(refused)):
            err = UserError(f"output {out} was refused by another process")
    if err is not None:
        raise err


def _mesh(sizes: tuple[int, int, int]):
    """The (data, fsdp, tensor) mesh; fixed sizes smaller than the device count (one
    process only) use the first devices."""
    devices = jax.devices()
    n = math.prod(sizes)
    if -1 not in sizes and n < len(devices) and jax.process_count() == 1:
        devices = devices[:n]
    return make_mesh(*sizes, devices=devices)


def _device_batch(host: dict[str, np.ndarray], accum: int, shardings: dict) -> dict[str, jax.Array]:
    """(b_local, T) host arrays -> (accum, b_global / accum, T) global arrays."""
    out = {}
    for k in BATCH_KEYS:
        a = np.asarray(host[k])
        a = a.reshape(accum, a.shape[0] // accum, *a.shape[1:])
        out[k] = jax.make_array_from_process_local_data(shardings[k], a)
    return out


def _trim_log(path: Path, step: int) -> None:
    """Drop metrics rows past ``step`` (from a run that died after its last checkpoint)."""
    if not path.is_file():
        return
    rows = [r for r in path.read_text().splitlines() if r and json.loads(r)["step"] <= step]
    atomic_write_text(path, "".join(r + "\n" for r in rows))


def _check_resumable(saved: dict, cfg: TrainConfig, start: int) -> int | None:
    """Refuse a resume whose config changed in a field that breaks exactness. ``steps`` may
    grow past the checkpoint's step (extending a run, finished or not); returns the old
    ``steps`` when it changed, else None."""
    old, new = saved["train_config"], cfg.to_dict()
    diff = sorted(
        k
        for k in new
        if k not in RESUMABLE_CHANGES | {"steps"} and json.dumps(old.get(k)) != json.dumps(new[k])
    )
    if diff:
        raise UserError(
            f"cannot resume: the run config changed in {diff} (checkpoint has {old[diff[0]]!r})"
        )
    if old["steps"] == cfg.steps:
        return None
    if cfg.steps <= start:
        raise UserError(
            f"cannot resume with steps={cfg.steps}: the checkpoint is at step {start}; "
            f"pass --steps N with N > {start} to extend the run"
        )
    return old["steps"]


def run(
    cfg: TrainConfig,
    *,
    student: HybridLM,
    train_source: Any,
    out: str | Path,
    teacher: HybridLM | None = None,
    eval_source: Any = None,
    resume: bool = False,
    family: str | None = None,
    hf_config: dict | None = None,
    aux_dir: str | Path | None = None,
    view: StudentView | None = None,
) -> RunResult:
    """Train (or distill into) ``student`` on ``train_source`` (a ``jaxprune.data`` Corpus or
    PackedRows); see the module docstring. Raises :class:`NonFiniteError` after
    ``cfg.max_bad_steps`` consecutive skipped steps (the last checkpoint stays intact).
    ``view`` (:mod:`jaxprune.train.view`): what each step trains (default: the student as
    it is); its parameters are checkpointed with the rest and handed to ``view.export``
    once the run is done."""
    view = view or StudentView()
    out = Path(out)
    _check_out(out, resume)
    for _, length in ((0, cfg.seq_len), *cfg.seq_len_stages):
        check_one_batch(train_source, batch_size=cfg.batch_size, seq_len=length)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.loss.uses_teacher and teacher is None:
        raise UserError("the loss needs a teacher (kl or intermediate layers) but none was given")
    nproc, accum = jax.process_count(), cfg.grad_accum
    mesh = _mesh(cfg.mesh)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = cfg.batch_size // accum
    if micro % shards or cfg.batch_size % (nproc * accum):
        raise UserError(
            f"batch_size {cfg.batch_size} / grad_accum {accum} must divide by the {shards} "
            f"data-parallel shards and over {nproc} processes"
        )

    s_model = retype(student, cfg.compute_dtype, "float32", mesh)
    s = SplitModel.of(s_model)
    t_pair, t_state, proj_shape = None, None, None
    if teacher is not None and cfg.loss.uses_teacher:
        t_pair = nnx.split(retype(teacher, cfg.teacher_dtype, cfg.teacher_dtype, mesh))
        t_state = t_pair[1]
        if cfg.loss.intermediate and teacher.config.hidden != student.config.hidden:
            proj_shape = (student.config.hidden, teacher.config.hidden)
    tx, schedule = make_optimizer(cfg.optim, cfg.steps), make_schedule(cfg.optim, cfg.steps)

    def stage_data(stage: int):
        length = cfg.seq_len_of(stage)
        src = train_source
        if stage and isinstance(src, PackedRows) and src.seq_len != length:
            src = PackedRows(src.corpus, length, pad_id=src.pad_id)
        return make_train_iterator(
            src,
            seq_len=length,
            batch_size=cfg.batch_size // nproc,
            seed=cfg.seed + stage,
            process_index=jax.process_index(),
            process_count=nproc,
        )

    ckpt = Checkpoints(out / "checkpoints", keep=cfg.keep, async_save=cfg.async_save)
    meta = {
        "train_config": cfg.to_dict(),
        "student": student.config.to_dict(),
        "teacher": None if teacher is None else teacher.config.to_dict(),
    }
    start = (ckpt.latest_step() or 0) if resume else 0
    stage = cfg.stage_at(start)
    data = stage_data(stage)
    extra = view.init_params(jax.random.key(cfg.seed + 1))
    if start:
        abstract = abstract_state(s, tx, proj_shape, extra)
        sh = train_state_shardings(abstract, params_shardings(s.params, mesh), tx, mesh)
        state, saved = ckpt.restore(start, abstract, sh, data)
        old_steps = _check_resumable(saved, cfg, start)
        if old_steps is not None and jax.process_index() == 0:
            was = float(make_schedule(cfg.optim, old_steps)(start))
            print(
                f"extending the run from {old_steps} to {cfg.steps} steps: from step {start} "
                f"the learning rate follows the {cfg.steps}-step schedule "
                f"({was:.3g} -> {float(schedule(start)):.3g})",
                file=sys.stderr,
            )
    else:
        state, sh = init_state(s, tx, mesh, seed=cfg.seed, proj_shape=proj_shape, extra=extra)
    step_fn = make_train_step(s, t_pair, tx, schedule, cfg, mesh, sh, view=view)
    batch_sh = batch_shardings(mesh)

    primary = jax.process_index() == 0
    if primary:
        _trim_log(out / "metrics.jsonl", start)
    log = RunLogger(
        out,
        total_steps=cfg.steps,
        start_step=start,
        tokens_per_step=cfg.batch_size * cfg.seq_len_of(stage),
        enabled=primary,
        progress=cfg.progress,
    )
    eval_fn, eval_batches = None, []
    if eval_source is not None:
        eval_fn = make_eval_step(s.graphdef, None if t_pair is None else t_pair[0], cfg.loss)
        rows = cfg.eval_batches * micro
        eval_batches = make_eval_batches(
            eval_source, seq_len=cfg.seq_len, batch_size=micro, max_rows=rows
        )

    def evaluate(step: int) -> dict[str, float]:
        sums = {"ce": 0.0, "kl": 0.0, "tokens": 0.0}
        rows_sh = sharding.batch_sharding(mesh)
        for b in eval_batches:
            arrays = {k: place(b[k], rows_sh) for k in BATCH_KEYS}
            got = jax.device_get(eval_fn(state["params"]["model"], s.rest, t_state, arrays))
            sums = {k: sums[k] + float(got[k]) for k in sums}
        n = max(sums["tokens"], 1.0)
        res = {
            "loss": sums["ce"] / n,
            "ppl": math.exp(min(sums["ce"] / n, 80.0)),
            "tokens": sums["tokens"],
        }
        if t_pair is not None:
            res["kl"] = sums["kl"] / n
        log.log(step, res, "eval")
        log.reset_rate()
        evals[step] = res
        return res

    evals: dict[int, dict[str, float]] = {}
    step, saved_step, bad, skipped, pending_save = start, start, 0, 0, False
    fresh = start
    last: dict[str, float] = {}
    status = "done"
    try:
        with _Preemption() as preempt:
            while step < cfg.steps:
                if cfg.stage_at(step) != stage:  # a longer sequence from here on
                    stage = cfg.stage_at(step)
                    data = stage_data(stage)
                    log.tokens_per_step = cfg.batch_size * cfg.seq_len_of(stage)
                    fresh = step
                batch = _device_batch(next(data), accum, batch_sh)
                state, metrics = step_fn(state, s.rest, t_state, batch)
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                step += 1
                bad = bad + 1 if last["skipped"] else 0
                skipped += int(last["skipped"])
                log.advance(last)
                if step == fresh + 1:
                    log.reset_rate()  # the first step (of a stage) includes compilation
                if step % cfg.log_every == 0 or step == cfg.steps or last["skipped"]:
                    log.log(
                        step,
                        {
                            **last,
                            "tokens_per_s": log.tokens_per_second,
                            "skipped_total": skipped,
                            "seq_len": cfg.seq_len_of(stage),
                        },
                    )
                if bad >= cfg.max_bad_steps:
                    ckpt.wait()
                    raise NonFiniteError(
                        f"{bad} consecutive steps had a non-finite loss or gradient (last at step "
                        f"{step}); stopping. The last good checkpoint is step {saved_step} in "
                        f"{ckpt.directory}"
                    )
                pending_save |= step % cfg.save_every == 0
                if pending_save and bad == 0:
                    ckpt.save(step, state, {**meta, "step": step}, data)
                    saved_step, pending_save = step, False
                if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0:
                    evaluate(step)
                if preempt.requested():
                    status = "preempted"
                    break
        if saved_step != step and bad == 0:
            ckpt.save(step, state, {**meta, "step": step}, data)
        ckpt.wait()
        if status == "done":
            if eval_fn is not None and step not in evals:
                evaluate(step)
            export_model(
                out,
                state["params"]["model"],
                s.rest,
                student.config,
                family=family,
                hf_config=hf_config,
                aux_dir=None if aux_dir is None else Path(aux_dir),
            )
            extras = {k: v for k, v in state["params"].items() if k not in ("model", "proj")}
            if primary and extras:  # replicated, so any process can read them
                view.export(out, jax.device_get(extras))
        return RunResult(status, step, last, evals.get(step), skipped)
    finally:
        log.close()
        ckpt.close()
