"""One DMC retrofit, as a library function: surgery, then training with the DMC view.

:func:`retrofit_dmc` turns the chosen attention blocks of ``model`` into DMC blocks
(:func:`~jaxprune.dmc.retrofit.retrofit`: the config change and the q/k surgery; a model
that is already DMC continues as it is) and trains it with :func:`jaxprune.train.run`
through :class:`~jaxprune.dmc.objective.DMCView`: relaxed decisions in every step, the
compression loss on their mean, and the trainer's LM objective, distillation from the
original model when the loss uses a teacher. OUT is then a native DMC model (its
``jaxprune.json`` keeps the DMC settings per block) that ``eval``, ``generate`` and
``bench`` serve with the compressed cache.
"""

from __future__ import annotations

from pathlib import Path

from jaxprune.config import DMCConfig
from jaxprune.dmc.objective import DMCTrainConfig, DMCView
from jaxprune.dmc.retrofit import dmc_blocks, retrofit
from jaxprune.nn.model import HybridLM
from jaxprune.train.config import TrainConfig
from jaxprune.train.trainer import RunResult, run


def dmc_student(model: HybridLM, dmc: DMCTrainConfig) -> HybridLM:
    """``model`` itself when it already has DMC blocks, else its retrofit."""
    if dmc_blocks(model.config):
        return model
    return retrofit(model, DMCConfig(init_val=dmc.init_val), dmc.blocks)


def retrofit_dmc(
    model: HybridLM,
    *,
    train_source,
    out: str | Path,
    train: TrainConfig,
    dmc: DMCTrainConfig | None = None,
    teacher: HybridLM | None = None,
    resume: bool = False,
    eval_source=None,
    family: str | None = None,
    hf_config: dict | None = None,
    aux_dir: str | Path | None = None,
) -> RunResult:
    """Retrofit ``model`` with DMC and train it for ``train.steps``. With a teacher loss
    (``train.loss.uses_teacher``) the teacher is ``teacher``, by default ``model`` as
    given (the plain model the retrofit starts from); with cross-entropy only, none.
    ``dmc``: the retrofit's settings (default :class:`DMCTrainConfig`)."""
    dmc = dmc or DMCTrainConfig()
    if train.loss.uses_teacher and teacher is None:
        teacher = model
    return run(
        train,
        student=dmc_student(model, dmc),
        train_source=train_source,
        out=out,
        teacher=teacher if train.loss.uses_teacher else None,  # CE only: none is needed
        eval_source=eval_source,
        resume=resume,
        view=DMCView(dmc, train.steps),
        family=family,
        hf_config=hf_config,
        aux_dir=aux_dir,
    )
