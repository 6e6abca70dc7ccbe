"""What a train step trains: the student as it is, or a view of it.

The step (:mod:`jaxprune.train.step`) asks its :class:`StudentView` for the model to run on
each step: the plain view returns the student unchanged; the elastic view
(:mod:`jaxprune.elastic.objective`) samples a budget and returns the student masked to the
router's choice, the activation masks that make the masked forward equal the child's, an
extra loss term (the budget penalty) and its metrics. Extra trainable parameters (the
router) live next to the model in the train state under ``params[name]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxprune.nn.dmc import Relaxation
from jaxprune.nn.model import HybridLM
from jaxprune.nn.taps import Tap


@dataclass(frozen=True)
class View:
    """``model`` to run, its activation ``masks`` (``HybridLM.__call__``'s; None: none),
    an ``extra`` scalar added to the loss, and extra scalar ``metrics``.

    ``relax`` and ``tap`` go to the student's forward (DMC's relaxed decisions and the tap
    that records them); ``after(batch)``, called once that forward is traced, returns one
    more (extra loss, metrics) pair (e.g. a loss on what ``tap`` recorded)."""

    model: HybridLM
    masks: dict | None = None
    extra: jax.Array | float = 0.0
    metrics: dict | None = None
    relax: Relaxation | None = None
    tap: Tap | None = None
    after: Callable[[dict], tuple[jax.Array, dict]] | None = None


class StudentView:
    """The identity view (plain training and distillation)."""

    #: names of the scalar metrics :meth:`__call__` returns
    metric_names: tuple[str, ...] = ()

    def init_params(self, key: jax.Array) -> dict:
        """Extra trainable pytrees {name: tree} (replicated); none by default."""
        return {}

    def __call__(self, trainable: dict, model: HybridLM, key: jax.Array, step: jax.Array) -> View:
        return View(model)

    def export(self, out: Path, params: dict) -> None:
        """Write the extra parameters ``params`` {name: host tree} (those of
        :meth:`init_params`, trained) next to the exported model, once a run is done."""


def zeros_like_metrics(view: StudentView) -> dict:
    return {k: jnp.zeros((), jnp.float32) for k in view.metric_names}
