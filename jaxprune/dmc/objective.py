"""The DMC retrofit objective: relaxed decisions in the forward, a loss on their mean.

:class:`DMCView` is the train step's view (:mod:`jaxprune.train.view`) for a DMC retrofit:
every step runs the student with Gumbel-sigmoid decisions (``Relaxation``), taps the
decisions of every DMC block and adds ``weight * max(0, (1 - 1/CR_t) - mean alpha)``, the
paper's one-sided compression loss, with the target ratio CR_t raised linearly from 1 to
``target_ratio`` over the first ``ramp_fraction`` of the steps and then held. The mean is
over all DMC blocks, KV heads and real tokens, so layers and heads may compress at
different rates. The LM side of the objective is the trainer's (distillation or plain CE).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxprune.errors import UserError
from jaxprune.nn.dmc import Relaxation
from jaxprune.nn.model import HybridLM
from jaxprune.nn.taps import DMCDecisions
from jaxprune.ops.dmc import ratio_loss, ratio_target
from jaxprune.train.view import StudentView, View


@dataclass(frozen=True)
class DMCTrainConfig:
    """A DMC retrofit's settings (gin-configurable as ``DMCTrainConfig``).

    ``target_ratio``: tokens per cache slot to reach (2, 4, ...); ``ramp_fraction``: the
    share of the steps over which the target rises from 1; ``temperature``: of the
    Gumbel-sigmoid; ``weight``: of the compression loss; ``init_val``: the decision /
    importance offset c of :class:`~jaxprune.config.DMCConfig`; ``blocks``: the attention
    blocks to compress (None: all)."""

    target_ratio: float = 4.0
    ramp_fraction: float = 0.75
    temperature: float = 0.1
    weight: float = 1.0
    init_val: float = 5.0
    blocks: tuple[int, ...] | None = None

    def __post_init__(self):
        if not self.target_ratio >= 1.0:
            raise UserError(f"dmc: target ratio must be >= 1, got {self.target_ratio}")
        if not 0.0 < self.ramp_fraction <= 1.0:
            raise UserError(f"dmc: ramp_fraction must be in (0, 1], got {self.ramp_fraction}")
        if not self.temperature > 0:
            raise UserError(f"dmc: temperature must be > 0, got {self.temperature}")
        if self.weight < 0:
            raise UserError(f"dmc: weight must be >= 0, got {self.weight}")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))


def mean_alpha(records: list[DMCDecisions]) -> jax.Array:
    """Mean merge decision over every record's real tokens and KV heads (fp32 scalar)."""
    if not records:
        raise UserError("dmc: the student has no DMC attention block")
    num = sum(jnp.sum(r.alpha * r.real[..., None]) for r in records)
    den = sum(jnp.sum(r.real) * r.alpha.shape[-1] for r in records)
    return num / jnp.maximum(den, 1)


class DMCView(StudentView):
    """The student with relaxed DMC decisions and the compression loss (module docstring)."""

    metric_names = ("dmc_alpha", "dmc_target", "dmc_loss")

    def __init__(self, dmc: DMCTrainConfig, steps: int):
        self.dmc = dmc
        self.steps = steps

    def __call__(self, trainable: dict, model: HybridLM, key: jax.Array, step: jax.Array) -> View:
        records: list[DMCDecisions] = []

        def tap(record) -> None:
            if isinstance(record, DMCDecisions):
                records.append(record)

        def after(batch: dict) -> tuple[jax.Array, dict]:
            alpha = mean_alpha(records)
            target = ratio_target(step, self.steps, self.dmc.target_ratio, self.dmc.ramp_fraction)
            loss = self.dmc.weight * ratio_loss(alpha, target)
            return loss, {"dmc_alpha": alpha, "dmc_target": target, "dmc_loss": loss}

        relax = Relaxation(key, self.dmc.temperature)
        return View(model, relax=relax, tap=tap, after=after)
