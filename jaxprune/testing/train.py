"""Tiny models, data and step builders for the trainer tests and their subprocess workers.

Importing this module imports jax: a worker that sets its own device count must do that
first (see tests/train/worker.py).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from jaxprune.config import ModelConfig
from jaxprune.data import Corpus
from jaxprune.nn.model import init_model
from jaxprune.sharding import make_mesh
from jaxprune.testing.configs import ATTN, MAMBA, MLP
from jaxprune.train.config import TrainConfig
from jaxprune.train.optim import make_optimizer, make_schedule
from jaxprune.train.state import init_state, place, retype
from jaxprune.train.step import SplitModel, batch_shardings, make_train_step

VOCAB = 61


def small_config(hidden: int = 24, pattern: str = "M*-") -> ModelConfig:
    """Mamba2 + attention + MLP (cheaper to compile than the full hybrid)."""
    return ModelConfig.from_pattern(
        pattern, vocab_size=VOCAB, hidden=hidden, mamba=MAMBA, attention=ATTN, mlp=MLP
    )


def corpus(n_tokens: int = 6000, seed: int = 0) -> Corpus:
    """Random tokens in a few documents of uneven length."""
    toks = np.random.default_rng(seed).integers(0, VOCAB, n_tokens).astype(np.int32)
    return Corpus([toks], np.array([0, 130, 1100, 2500, 4000]))


def host_batch(accum: int, micro: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    """(accum, micro, t) batch with two packed documents per row."""
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, VOCAB, (accum, micro, t + 1)).astype(np.int32)
    cut = t // 3
    seq_idx = (np.arange(t) >= cut).astype(np.int32)
    positions = np.where(seq_idx == 0, np.arange(t), np.arange(t) - cut).astype(np.int32)
    mask = np.ones((accum, micro, t), np.float32)
    mask[..., cut - 1] = 0.0  # target crosses into the next document
    mask[:, -1, -3:] = 0.0  # padding
    return {
        "tokens": tok[..., :-1],
        "targets": tok[..., 1:],
        "loss_mask": mask,
        "seq_idx": np.broadcast_to(seq_idx, (accum, micro, t)).copy(),
        "positions": np.broadcast_to(positions, (accum, micro, t)).copy(),
    }


def build_step(
    cfg: TrainConfig, n_devices: int, *, student_cfg=None, teacher_cfg=None, fused_loss=False
):
    """(step_fn, state, rest, teacher_state, batch_placer) on a (n, 1, 1) or (2, 2, 2) mesh.
    ``fused_loss``: see ``jaxprune.train.step.make_step_fn``."""
    sizes = (2, 2, 2) if n_devices == 8 else (n_devices, 1, 1)
    mesh = make_mesh(*sizes, devices=jax.devices()[:n_devices])
    s_cfg = student_cfg or small_config()
    student = retype(init_model(s_cfg, 0), cfg.compute_dtype, "float32", mesh)
    s = SplitModel.of(student)
    teacher = None
    t_state = None
    proj = None
    if teacher_cfg is not None:
        t_model = retype(init_model(teacher_cfg, 1), cfg.teacher_dtype, cfg.teacher_dtype, mesh)
        teacher = nnx.split(t_model)
        t_state = teacher[1]
        if cfg.loss.intermediate and teacher_cfg.hidden != s_cfg.hidden:
            proj = (s_cfg.hidden, teacher_cfg.hidden)
    tx = make_optimizer(cfg.optim, cfg.steps)
    state, sh = init_state(s, tx, mesh, seed=cfg.seed, proj_shape=proj)
    schedule = make_schedule(cfg.optim, cfg.steps)
    fn = make_train_step(s, teacher, tx, schedule, cfg, mesh, sh, fused_loss=fused_loss)
    bsh = batch_shardings(mesh)
    return fn, state, s.rest, t_state, lambda b: place(b, {k: bsh[k] for k in b})


def distill(
    out: str,
    *,
    steps: int,
    resume: bool = False,
    mesh=(2, 2, 1),
    save_every: int = 2,
    optim=None,
    seq_len_stages=(),
):
    """A fixed KD run: small student, deeper / wider teacher, CE + intermediate losses;
    ``optim`` (an OptimConfig) replaces its warm-up + cosine schedule."""
    from jaxprune.train import LossConfig, OptimConfig, run

    cfg = TrainConfig(
        steps=steps,
        batch_size=8,
        seq_len=16,
        grad_accum=2,
        save_every=save_every,
        keep=2,
        mesh=mesh,
        loss=LossConfig(intermediate=((1, 2),), ce_weight=0.5, chunk=8),
        optim=optim or OptimConfig(lr=3e-3, warmup_steps=2),
        compute_dtype="float32",
        teacher_dtype="float32",
        progress=False,
        log_every=1,
        seq_len_stages=seq_len_stages,
    )
    student = init_model(small_config(24), 0)
    teacher = init_model(small_config(32, "M-*-"), 1)
    return run(cfg, student=student, teacher=teacher, train_source=corpus(), out=out, resume=resume)


def tiny_train_config(**kw) -> TrainConfig:
    """A 2-step fp32 single-device run on 4 x 16-token rows, for pipeline tests."""
    base = dict(
        steps=2,
        batch_size=4,
        seq_len=16,
        compute_dtype="float32",
        teacher_dtype="float32",
        save_every=2,
        mesh=(1, 1, 1),
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


def preempt_at(monkeypatch, n: int) -> None:
    """Make the trainer receive SIGTERM while fetching its ``n``-th batch (the run saves a
    checkpoint and returns ``"preempted"``); undo with ``monkeypatch.undo()``."""
    import os
    import signal

    from jaxprune.train import trainer

    calls = {"n": 0}
    original = trainer._device_batch

    def fetch(*a, **kw):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*a, **kw)

    monkeypatch.setattr(trainer, "_device_batch", fetch)
