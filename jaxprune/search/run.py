"""The architecture search as one library function: shortlist the candidates that fit a
budget, score them zero-shot (and, when asked, after a short distillation, the step of the
Minitron search whose ranking matters most), pick the best. ``jaxprune search`` and the
``compress`` pipeline both call :func:`run_search`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.search.budget import parse_params
from jaxprune.search.report import write_report
from jaxprune.search.search import Budget, Candidate, evaluate, shortlist
from jaxprune.search.space import SearchSpace


@dataclass(frozen=True)
class SearchConfig:
    """A search run; the ``search`` command's flags and the ``compress`` gin bindings are
    generated from these fields."""

    params: float = field(
        metadata={
            "help": "budget: 0 < x <= 1 is a fraction of the source (0.6), else a count "
            "(4e9, 4B, 350M); 1 < x < 1000 is refused",
            "parse": parse_params,
        }
    )
    active: bool = field(default=False, metadata={"help": "budget active (MoE) parameters"})
    memory_gb: float | None = field(
        default=None, metadata={"help": "cap on weights + KV + SSM/conv state (GB)"}
    )
    memory_batch: int = field(default=1, metadata={"help": "batch of the memory budget"})
    memory_context: int = field(default=4096, metadata={"help": "context of the memory budget"})
    top_k: int = field(default=10, metadata={"help": "candidates scored"})
    distill_steps: int = field(
        default=0, metadata={"help": "short distillation per candidate before ranking (0: off)"}
    )
    distill_lr: float = field(default=1e-3, metadata={"help": "its learning rate"})
    max_prune: float = field(default=0.5, metadata={"help": "largest fraction cut per axis"})
    divisor: int = field(default=64, metadata={"help": "widths are multiples of this"})
    eval_samples: int = field(default=64, metadata={"help": "rows each candidate is scored on"})

    def __post_init__(self):
        object.__setattr__(self, "params", parse_params(self.params))
        if self.memory_gb is not None and not self.memory_gb > 0:
            raise UserError(f"search: memory_gb must be > 0, got {self.memory_gb}")
        for name in ("memory_batch", "memory_context", "top_k", "divisor", "eval_samples"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"search: {name} must be >= 1, got {getattr(self, name)}")
        if self.distill_steps < 0:
            raise UserError(f"search: distill_steps must be >= 0, got {self.distill_steps}")
        if not 0 < self.max_prune < 1:
            raise UserError(f"search: max_prune must be in (0, 1), got {self.max_prune}")

    @property
    def budget(self) -> Budget:
        return Budget(
            params=self.params,
            active=self.active,
            memory_gb=self.memory_gb,
            batch=self.memory_batch,
            context=self.memory_context,
        )

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(max_prune=self.max_prune, divisor=self.divisor)


@dataclass
class SearchResult:
    """Every scored candidate, the chosen one and the source's parameter counts."""

    candidates: list[Candidate]
    best: Candidate
    source: dict

    def write(self, out: Path, data: dict | None = None) -> list[Path]:
        """``report.md``, ``candidates.json`` and the plot into ``out``; ``data`` says what
        the candidates were scored on (see :func:`jaxprune.search.report.write_report`)."""
        return write_report(Path(out), self.candidates, self.best, self.source, data)


def run_search(
    model: HybridLM,
    scores: dict,
    rows: np.ndarray,
    budget: Budget,
    space: SearchSpace,
    top_k: int,
    *,
    distill_steps: int = 0,
    distill_lr: float = 1e-3,
    batch_size: int = 8,
    depth: str = "depth_block_influence",
    mamba_grouping: str = "aware",
    progress: Callable[[int, int, Candidate], None] | None = None,
) -> SearchResult:
    """Shortlist the ``top_k`` largest candidates within ``budget``, score each by LM loss
    on ``rows`` (N, T) (after ``distill_steps`` of distillation from ``model`` when > 0)
    and by decode latency; the best is the lowest final loss. ``progress(i, n, candidate)``
    is called after each candidate is scored (the ``search`` command prints a line).
    ``mamba_grouping``: how candidates are pruned (see ``pruning.prune.plan``)."""
    cands = shortlist(model, scores, budget, space, top_k, depth)
    distill = None
    if distill_steps:
        from jaxprune.search.distill import make_short_distill

        distill = make_short_distill(model, rows, steps=distill_steps, lr=distill_lr)
    cands = evaluate(
        model,
        scores,
        cands,
        rows,
        distill=distill,
        batch_size=batch_size,
        depth=depth,
        mamba_grouping=mamba_grouping,
        progress=progress,
    )
    best = min(cands, key=lambda c: c.final_loss)
    return SearchResult(cands, best, count_params(model.config))


def search_with(
    model: HybridLM, scores: dict, rows: np.ndarray, cfg: SearchConfig, **kw
) -> SearchResult:
    """:func:`run_search` with the settings of a :class:`SearchConfig`."""
    return run_search(
        model,
        scores,
        rows[: cfg.eval_samples],
        cfg.budget,
        cfg.space,
        cfg.top_k,
        distill_steps=cfg.distill_steps,
        distill_lr=cfg.distill_lr,
        **kw,
    )
