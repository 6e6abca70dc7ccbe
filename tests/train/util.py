"""Shared tiny models, data and step builders for the trainer tests."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig
from jaxprune.data import Corpus
from jaxprune.nn.model import init_model
from jaxprune.sharding import make_mesh
from jaxprune.train.config import TrainConfig
from jaxprune.train.optim import make_optimizer, make_schedule
from jaxprune.train.state import init_state, place, retype
from jaxprune.train.step import SplitModel, batch_shardings, make_train_step

# As in tests/conftest.py, which is not imported here: the subprocess workers choose their
# own device count before jax starts.
VOCAB = 61
MAMBA = Mamba2Config(num_heads=6, head_dim=5, state=7, n_groups=3, chunk_size=8)
ATTN = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=6)
MLP = MLPConfig(intermediate=29)


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


def build_step(cfg: TrainConfig, n_devices: int, *, student_cfg=None, teacher_cfg=None):
    """(step_fn, state, rest, teacher_state, batch_placer) on a (n, 1, 1) or (2, 2, 2) mesh."""
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
    fn = make_train_step(s, teacher, tx, make_schedule(cfg.optim, cfg.steps), cfg, mesh, sh)
    bsh = batch_shardings(mesh)
    return fn, state, s.rest, t_state, lambda b: place(b, {k: bsh[k] for k in b})
