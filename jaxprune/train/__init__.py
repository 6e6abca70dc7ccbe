"""Training and knowledge distillation: losses, optimizer, the jitted step, the run loop."""

from jaxprune.train.config import LossConfig, OptimConfig, TrainConfig
from jaxprune.train.losses import (
    chunked_logit_losses,
    combine_losses,
    cross_entropy,
    forward_kl,
    intermediate_loss,
    kd_loss,
    reverse_kl,
    topk_kl,
)
from jaxprune.train.optim import make_optimizer, make_schedule
from jaxprune.train.step import SplitModel, hidden_states, make_eval_step, make_train_step
from jaxprune.train.trainer import NonFiniteError, RunResult, run

__all__ = [
    "SplitModel",
    "LossConfig",
    "NonFiniteError",
    "OptimConfig",
    "RunResult",
    "TrainConfig",
    "chunked_logit_losses",
    "combine_losses",
    "cross_entropy",
    "forward_kl",
    "hidden_states",
    "intermediate_loss",
    "kd_loss",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "reverse_kl",
    "run",
    "topk_kl",
]
