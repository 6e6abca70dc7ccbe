"""The real jitted distillation step (`jaxprune.train.step.make_train_step`) built for a
(student, teacher) config pair on a mesh, either with real weights (timing) or on abstract
shapes only (`jax.ShapeDtypeStruct`: compile and read XLA's memory / cost analysis, no
weights). Shared by experiments/gpu_check.py and experiments/scale_plan.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxprune.config import ModelConfig
from jaxprune.nn.model import abstract_model, init_model
from jaxprune.train import LossConfig, OptimConfig, TrainConfig
from jaxprune.train.optim import make_optimizer, make_schedule
from jaxprune.train.state import abstract_state, init_state, place
from jaxprune.train.step import (
    SplitModel,
    batch_shardings,
    make_train_step,
    params_shardings,
    train_state_shardings,
)


def kd_train_config(batch: int, seq_len: int, grad_accum: int = 1, chunk: int = 128) -> TrainConfig:
    """bf16 compute, fp32 student masters, bf16 teacher, forward KL (the recipes' loss)."""
    return TrainConfig(
        steps=1000,
        batch_size=batch,
        seq_len=seq_len,
        grad_accum=grad_accum,
        compute_dtype="bfloat16",
        teacher_dtype="bfloat16",
        loss=LossConfig(kl="forward", ce_weight=0.0, chunk=chunk),
        optim=OptimConfig(lr=1e-4, warmup_steps=10),
    )


@dataclass
class BuiltStep:
    """A jitted step and the (abstract or real) arguments it is called with."""

    fn: Any
    args: tuple
    student: SplitModel

    def compile(self):
        return self.fn.lower(*self.args).compile()


def _typed(cfg: ModelConfig, dtype: str, param_dtype: str) -> ModelConfig:
    return cfg.replace(dtype=dtype, param_dtype=param_dtype)


def host_batch(cfg: TrainConfig, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens shaped (grad_accum, micro_batch, T), one sequence per row."""
    a, m, t = cfg.grad_accum, cfg.batch_size // cfg.grad_accum, cfg.seq_len
    tok = np.random.default_rng(seed).integers(0, vocab, (a, m, t + 1)).astype(np.int32)
    return {
        "tokens": tok[..., :-1],
        "targets": tok[..., 1:],
        "loss_mask": np.ones((a, m, t), np.float32),
        "seq_idx": np.zeros((a, m, t), np.int32),
        "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (a, m, t)).copy(),
    }


def abstract_batch(cfg: TrainConfig, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    a, m, t = cfg.grad_accum, cfg.batch_size // cfg.grad_accum, cfg.seq_len
    sh = batch_shardings(mesh)
    dtypes = {"loss_mask": jnp.float32}
    return {
        k: jax.ShapeDtypeStruct((a, m, t), dtypes.get(k, jnp.int32), sharding=s)
        for k, s in sh.items()
    }


def _with_sharding(tree, shardings):
    def one(x, s):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

    return jax.tree.map(one, tree, shardings)


def build_abstract(
    student_cfg: ModelConfig, teacher_cfg: ModelConfig, cfg: TrainConfig, mesh: Mesh
) -> BuiltStep:
    """The step on ShapeDtypeStructs carrying the rules' shardings: nothing is allocated."""
    s_model = abstract_model(_typed(student_cfg, cfg.compute_dtype, "float32"))
    t_model = abstract_model(_typed(teacher_cfg, cfg.teacher_dtype, cfg.teacher_dtype))
    student = SplitModel.of(s_model)
    t_def, t_state = nnx.split(t_model)
    tx = make_optimizer(cfg.optim, cfg.steps)
    abstract = abstract_state(student, tx, None)
    sh = train_state_shardings(abstract, params_shardings(student.params, mesh), tx, mesh)
    fn = make_train_step(
        student, (t_def, t_state), tx, make_schedule(cfg.optim, cfg.steps), cfg, mesh, sh
    )
    rest = _with_sharding(student.rest, params_shardings(student.rest, mesh))
    teacher = _with_sharding(t_state, params_shardings(t_state, mesh))
    args = (_with_sharding(abstract, sh), rest, teacher, abstract_batch(cfg, mesh))
    return BuiltStep(fn, args, student)


def build_real(
    student_cfg: ModelConfig, teacher_cfg: ModelConfig, cfg: TrainConfig, mesh: Mesh
) -> BuiltStep:
    """The step with randomly initialised weights (created on the mesh, no host copy)."""
    s_model = init_model(_typed(student_cfg, cfg.compute_dtype, "float32"), 0, mesh=mesh)
    t_model = init_model(_typed(teacher_cfg, cfg.teacher_dtype, cfg.teacher_dtype), 1, mesh=mesh)
    student = SplitModel.of(s_model)
    t_def, t_state = nnx.split(t_model)
    tx = make_optimizer(cfg.optim, cfg.steps)
    state, sh = init_state(student, tx, mesh, seed=0)
    fn = make_train_step(
        student, (t_def, t_state), tx, make_schedule(cfg.optim, cfg.steps), cfg, mesh, sh
    )
    batch = place(host_batch(cfg, student_cfg.vocab_size), batch_shardings(mesh))
    return BuiltStep(fn, (state, student.rest, t_state, batch), student)


def memory(compiled) -> dict[str, int] | None:
    """XLA's per-device memory analysis of a compiled step (bytes); ``peak`` = arguments +
    outputs - donated aliases + temporaries."""
    ma = compiled.memory_analysis()
    if ma is None:
        return None
    out = {
        "arguments": int(ma.argument_size_in_bytes),
        "outputs": int(ma.output_size_in_bytes),
        "aliased": int(ma.alias_size_in_bytes),
        "temp": int(ma.temp_size_in_bytes),
        "code": int(ma.generated_code_size_in_bytes),
    }
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temp"]
    return out


def flops(compiled) -> float | None:
    """XLA's cost-analysis FLOPs of the compiled step (per device), if it reports them."""
    ca = compiled.cost_analysis()
    if isinstance(ca, list):
        ca = ca[0] if ca else None
    return None if not ca or "flops" not in ca else float(ca["flops"])
