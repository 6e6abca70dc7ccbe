"""Frozen configuration of a training / distillation run.

Three small dataclasses: :class:`LossConfig` (what is minimized), :class:`OptimConfig`
(AdamW, schedule, clipping) and :class:`TrainConfig` (the run: steps, batch, mesh, IO).
They carry no behaviour and no gin: the CLI / ``experiments`` layer binds them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from jaxprune.errors import UserError

KL = Literal["forward", "reverse", "topk", "none"]
Intermediate = Literal["cosine", "mse"]


@dataclass(frozen=True)
class LossConfig:
    """The objective.

    * ``kl``: ``forward`` = KL(p_teacher || p_student), ``reverse`` = KL(p_student ||
      p_teacher), ``topk`` = forward KL against the teacher truncated to its ``top_k`` most
      likely tokens and renormalized (the student keeps its full-vocabulary log-softmax, so
      the student is also pushed to put no mass on the tail), ``none`` = no logit loss.
      Probabilities are ``softmax(logits / temperature)``; there is **no T^2 factor**
      (ModelOpt ``LogitsKLLoss`` convention).
    * ``ce_weight``: weight of next-token cross-entropy on the labels (0 = off).
    * ``intermediate``: pairs ``(student_block, teacher_block)`` whose outputs (the residual
      stream after that block; negative indices count from the end) are matched with
      ``intermediate_loss``; a shared learned linear map (d_s, d_t) is trained when the
      widths differ.
    * ``balance``: ModelOpt / Minitron dynamic balancing: the intermediate term is scaled by
      stop_grad(L_logits / L_inter) and, with CE on, the KD term by stop_grad(L_ce / L_kd).
    * ``chunk``: sequence chunk length for the logit losses (0 = whole sequence); only
      (b, chunk, V) student and teacher logits are ever live.
    """

    kl: KL = "forward"
    temperature: float = 1.0
    top_k: int = 0
    ce_weight: float = 0.0
    kd_weight: float = 1.0
    intermediate: tuple[tuple[int, int], ...] = ()
    intermediate_loss: Intermediate = "cosine"
    balance: bool = True
    chunk: int = 128

    def __post_init__(self):
        object.__setattr__(
            self, "intermediate", tuple((int(s), int(t)) for s, t in self.intermediate)
        )
        if self.kl not in ("forward", "reverse", "topk", "none"):
            raise UserError(f"loss: kl must be forward, reverse, topk or none, got {self.kl!r}")
        if self.kl == "topk" and self.top_k < 1:
            raise UserError("loss: kl='topk' needs top_k >= 1")
        if self.temperature <= 0:
            raise UserError(f"loss: temperature must be > 0, got {self.temperature}")
        if self.intermediate_loss not in ("cosine", "mse"):
            raise UserError(
                f"loss: intermediate_loss must be cosine or mse, got {self.intermediate_loss!r}"
            )
        if self.chunk < 0:
            raise UserError(f"loss: chunk must be >= 0, got {self.chunk}")

    @property
    def uses_teacher(self) -> bool:
        return self.kl != "none" or bool(self.intermediate)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up (:meth:`warmup` steps) then ``cosine`` (to ``min_lr_ratio``
    * lr) or ``wsd`` (warm-up, stable, then a linear decay over the last ``decay_fraction``
    of the steps), or ``constant``. Weight decay applies to parameters with >= 2 dims only."""

    lr: float = 1e-3  # the distillation sweep in BENCHMARKS.md (experiments/lr_sweep.py)
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    warmup_cap: int = 100
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = 0.2
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0

    def __post_init__(self):
        if self.schedule not in ("cosine", "wsd", "constant"):
            raise UserError(
                f"optim: schedule must be cosine, wsd or constant, got {self.schedule!r}"
            )
        if self.lr <= 0 or (self.warmup_steps or 0) < 0 or not 0 <= self.decay_fraction <= 1:
            raise UserError("optim: need lr > 0, warmup_steps >= 0, 0 <= decay_fraction <= 1")
        if not 0 <= self.warmup_fraction <= 1 or self.warmup_cap < 0:
            raise UserError(
                f"optim: need 0 <= warmup_fraction <= 1 and warmup_cap >= 0, got "
                f"{self.warmup_fraction}, {self.warmup_cap}"
            )

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps of a ``total_steps`` run: ``warmup_steps`` when set, else
        ``ceil(warmup_fraction * total_steps)`` capped at ``warmup_cap`` (8 of a 150-step
        recovery run, 100 of a 2000-step one); never more than ``total_steps - 1``."""
        if self.warmup_steps is None:
            warm = min(self.warmup_cap, math.ceil(self.warmup_fraction * total_steps - 1e-9))
        else:
            warm = self.warmup_steps
        return min(warm, max(total_steps - 1, 0))


REMAT = ("none", "block")


@dataclass(frozen=True)
class TrainConfig:
    """One run. ``batch_size`` sequences of ``seq_len`` tokens per optimizer step, split into
    ``grad_accum`` micro-batches. The student computes in ``compute_dtype`` with fp32 master
    weights; the teacher in ``teacher_dtype`` (its parameters are cast to it).

    ``mesh`` is (data, fsdp, tensor); -1 = all remaining devices. ``max_bad_steps``
    consecutive non-finite steps (skipped updates) stop the run. ``remat``: "none" keeps
    every activation for the backward; "block" keeps only each student block's input and
    recomputes the block in the backward (about one more forward, less activation memory).
    ``seq_len_stages``: ``((step, seq_len), ...)``, increasing steps in [1, steps): from
    that many completed steps on, batches have that ``seq_len`` (same ``batch_size``; the
    step compiles once per length; evaluation keeps ``seq_len``).
    """

    steps: int = 1000
    batch_size: int = 8
    seq_len: int = 512
    grad_accum: int = 1
    seed: int = 0
    compute_dtype: str = "bfloat16"
    teacher_dtype: str = "bfloat16"
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mesh: tuple[int, int, int] = (-1, 1, 1)
    save_every: int = 500
    keep: int = 3
    async_save: bool = True
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 16
    max_bad_steps: int = 10
    progress: bool = True
    remat: str = "none"
    seq_len_stages: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "mesh", tuple(int(m) for m in self.mesh))
        stages = tuple((int(a), int(b)) for a, b in self.seq_len_stages)
        object.__setattr__(self, "seq_len_stages", stages)
        froms = [a for a, _ in stages]
        if froms != sorted(set(froms)) or any(not 1 <= a < self.steps for a in froms):
            raise UserError(
                f"train: seq_len_stages need distinct increasing steps in [1, {self.steps}), "
                f"got {froms}"
            )
        if any(b < 1 for _, b in stages):
            raise UserError(f"train: seq_len_stages lengths must be >= 1, got {list(stages)}")
        for name in ("steps", "batch_size", "seq_len", "grad_accum", "keep", "max_bad_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UserError(f"train: {name} must be an integer >= 1, got {v!r}")
        if self.batch_size % self.grad_accum:
            raise UserError(
                f"train: batch_size {self.batch_size} is not a multiple of grad_accum "
                f"{self.grad_accum}"
            )
        if len(self.mesh) != 3:
            raise UserError(f"train: mesh must be (data, fsdp, tensor), got {self.mesh}")
        if self.remat not in REMAT:
            raise UserError(f"train: remat {self.remat!r}; choose from {', '.join(REMAT)}")

    def stage_at(self, step: int) -> int:
        """The sequence-length stage (0: ``seq_len``) of the batch after ``step`` steps."""
        return sum(step >= a for a, _ in self.seq_len_stages)

    def seq_len_of(self, stage: int) -> int:
        return self.seq_len if stage == 0 else self.seq_len_stages[stage - 1][1]

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["loss"] = LossConfig(**d.get("loss", {}))
        d["optim"] = OptimConfig(**d.get("optim", {}))
        return cls(**d)


#: Fields that may change between a run and its ``--resume`` without breaking exactness.
RESUMABLE_CHANGES = frozenset(
    {"save_every", "keep", "async_save", "log_every", "eval_every", "eval_batches", "progress"}
)
