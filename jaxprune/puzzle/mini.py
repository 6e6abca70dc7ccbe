"""MiniPuzzle, as Nemotron-H went from 56B to 47B: a grid over blocks kept per kind x one
FFN width, a memory (and parameter) filter, ranking by next-token accuracy and agreement
with the parent, then a short distillation of the top few.

Blocks are dropped individually, each kind on its own: the lowest-ranked blocks of a kind
by a depth ranking (default MiniPuzzle's ``depth_hidden_mse``: the MSE of the activation
before the LM head with that block alone removed). Every FFN keeps the same width, its
neurons chosen by the Minitron activation scores. :func:`run_minipuzzle` is what
``jaxprune puzzle`` calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jaxprune.config import MLPConfig
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.evaluation.agreement import next_token_metrics
from jaxprune.nn.model import HybridLM
from jaxprune.pruning.materialize import materialize
from jaxprune.pruning.prune import plan, prune
from jaxprune.pruning.targets import KIND_COUNTS
from jaxprune.search.budget import describe, parse_params
from jaxprune.search.search import Candidate, decode_ms
from jaxprune.search.space import SearchSpace, axis_choices, candidates, memory_bytes


def _optional_params(value):
    return None if value in (None, "", "none") else parse_params(value)


@dataclass(frozen=True)
class MiniPuzzleConfig:
    """One MiniPuzzle run; the ``puzzle`` command's flags are generated from these fields."""

    memory_gb: float | None = field(
        default=None, metadata={"help": "cap on weights + KV + SSM/conv state (GB)"}
    )
    params: float | None = field(
        default=None,
        metadata={"help": "cap on parameters: a fraction (0.8) or a count (47e9)",
                  "parse": _optional_params},
    )  # fmt: skip
    memory_batch: int = field(default=1, metadata={"help": "batch of the memory cap"})
    memory_context: int = field(default=4096, metadata={"help": "context of the memory cap"})
    ffn_divisor: int = field(default=64, metadata={"help": "FFN widths are multiples of this"})
    max_prune: float = field(default=0.5, metadata={"help": "largest fraction cut per axis"})
    rank_top: int = field(
        default=64, metadata={"help": "feasible candidates ranked (largest memory first)"}
    )
    top_k: int = field(default=3, metadata={"help": "best-ranked candidates distilled"})
    distill_steps: int = field(
        default=0, metadata={"help": "short distillation of the top_k (0: rank zero-shot)"}
    )
    distill_lr: float = field(default=1e-3, metadata={"help": "its learning rate"})
    eval_samples: int = field(default=64, metadata={"help": "rows each candidate is scored on"})

    def __post_init__(self):
        object.__setattr__(self, "params", _optional_params(self.params))
        if self.memory_gb is None and self.params is None:
            raise UserError("puzzle: give a budget: memory_gb and/or params")
        if self.memory_gb is not None and not self.memory_gb > 0:
            raise UserError(f"puzzle: memory_gb must be > 0, got {self.memory_gb}")
        for name in ("memory_batch", "memory_context", "ffn_divisor", "rank_top", "top_k"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"puzzle: {name} must be >= 1, got {getattr(self, name)}")
        if self.eval_samples < 1 or self.distill_steps < 0:
            raise UserError("puzzle: eval_samples must be >= 1 and distill_steps >= 0")
        if not 0 < self.max_prune < 1:
            raise UserError(f"puzzle: max_prune must be in (0, 1), got {self.max_prune}")

    def limits(self, cfg) -> tuple[float, float]:
        """(parameter limit, memory limit in bytes) for source ``cfg`` (inf when unset)."""
        total = count_params(cfg)["total"]
        p = np.inf if self.params is None else self.params
        p = p * total if p <= 1 else p
        m = np.inf if self.memory_gb is None else self.memory_gb * 1e9
        return float(p), float(m)

    def space(self, cfg) -> SearchSpace:
        kinds = tuple(k for k in KIND_COUNTS if any(x.kind == KIND_COUNTS[k] for x in cfg.layers))
        ffn = ("intermediate_size",) if any(isinstance(x, MLPConfig) for x in cfg.layers) else ()
        return SearchSpace(axes=(*kinds, *ffn), max_prune=self.max_prune, divisor=self.ffn_divisor)


@dataclass
class MiniPuzzleResult:
    """The ranked candidates (best first), the chosen one, the grid's size and the source."""

    candidates: list[Candidate]
    best: Candidate
    source: dict
    grid: int
    feasible: int


def check_budget(model_cfg, cfg: MiniPuzzleConfig) -> tuple[float, float]:
    """(parameter, memory) limits; refuses a budget that admits the parent itself (cheap:
    call it before calibrating)."""
    p_lim, m_lim = cfg.limits(model_cfg)
    n, mem = count_params(model_cfg)["total"], _memory(model_cfg, cfg)
    if n <= p_lim and mem <= m_lim:
        raise UserError(
            f"puzzle: the budget ({_budget_text(cfg)}) admits the parent itself ({n:,} "
            f"params, {mem / 1e9:.4g} GB); give a smaller --memory-gb or --params"
        )
    return p_lim, m_lim


def grid(
    model: HybridLM, scores: dict, cfg: MiniPuzzleConfig, depth: str
) -> tuple[list[Candidate], int, int]:
    """(the ``rank_top`` feasible candidates with the most memory, grid size, feasible
    count). Refuses a budget that admits the parent and one that nothing in the grid meets."""
    p_lim, m_lim = check_budget(model.config, cfg)
    space = cfg.space(model.config)
    feasible: dict = {}
    n, least = 0, (np.inf, np.inf)
    for targets, small in candidates(model.config, scores, space, depth):
        n += 1
        c, m = count_params(small), _memory(small, cfg)
        least = (min(least[0], c["total"]), min(least[1], m))
        if c["total"] <= p_lim and m <= m_lim:
            feasible.setdefault(small, Candidate(targets, c["total"], c["active"], m))
    if not feasible:
        raise UserError(
            f"puzzle: no candidate meets the budget ({_budget_text(cfg)}): the grid's smallest "
            f"has {least[0]:,.0f} params and needs {least[1] / 1e9:.4g} GB, bounded by "
            f"--max-prune {cfg.max_prune}; raise it (below 1) or the budget"
        )
    ranked = sorted(feasible.values(), key=lambda c: (c.memory, c.params), reverse=True)
    return ranked[: cfg.rank_top], n, len(feasible)


def rank(
    parent: HybridLM,
    scores: dict,
    cands: list[Candidate],
    rows: np.ndarray,
    *,
    depth: str,
    batch_size: int = 8,
    progress: Callable[[int, int, Candidate], None] | None = None,
) -> list[Candidate]:
    """Prune each candidate and score it on ``rows`` (N, T): loss, ``extra["accuracy"]``,
    ``extra["agreement"]`` (with the parent's top-1) and ``extra["score"]``, their mean;
    returns the candidates best score first (ties: lower loss)."""
    parent_top = next_token_metrics(parent, rows, batch_size=batch_size)["top"]
    for i, c in enumerate(cands, 1):
        kept = plan(parent.config, scores, c.targets, depth)
        small = materialize(parent, kept)
        m = next_token_metrics(small, rows, parent_top=parent_top, batch_size=batch_size)
        c.loss = m["loss"]
        c.extra = {
            "accuracy": m["accuracy"],
            "agreement": m["agreement"],
            "score": 0.5 * (m["accuracy"] + m["agreement"]),
            "kept_blocks": [int(j) for j in kept.get("depth", range(len(parent.config.layers)))],
        }
        c.decode_ms = decode_ms(small)
        if progress is not None:
            progress(i, len(cands), c)
    return sorted(cands, key=lambda c: (-c.extra["score"], c.loss))


def run_minipuzzle(
    parent: HybridLM,
    scores: dict,
    rows: np.ndarray,
    cfg: MiniPuzzleConfig,
    *,
    depth: str = "depth_hidden_mse",
    batch_size: int = 8,
    progress: Callable[[int, int, Candidate], None] | None = None,
) -> MiniPuzzleResult:
    """Grid, filter, rank on ``rows[:eval_samples]``; with ``distill_steps`` the ``top_k``
    are distilled from ``parent`` on those rows and the lowest distilled loss wins, else
    the best-ranked candidate does."""
    if depth not in scores:
        raise UserError(f"puzzle: the scores have no {depth} depth ranking")
    rows = rows[: cfg.eval_samples]
    cands, n, feasible = grid(parent, scores, cfg, depth)
    ranked = rank(parent, scores, cands, rows, depth=depth, batch_size=batch_size,
                  progress=progress)  # fmt: skip
    best = ranked[0]
    if cfg.distill_steps:
        from jaxprune.evaluation import evaluate_lm_loss
        from jaxprune.search.distill import make_short_distill

        distill = make_short_distill(parent, rows, steps=cfg.distill_steps, lr=cfg.distill_lr)
        for c in ranked[: cfg.top_k]:
            student = distill(prune(parent, scores, c.targets, depth))
            c.distilled_loss = evaluate_lm_loss(student, rows, batch_size=batch_size)["loss"]
        best = min(ranked[: cfg.top_k], key=lambda c: c.distilled_loss)
    return MiniPuzzleResult(ranked, best, count_params(parent.config), n, feasible)


def choices(parent_cfg, scores: dict, best: Candidate, depth: str) -> dict:
    """``choices.json``: per block of the parent its kind, depth score and whether it is
    kept (and the FFN width), plus the chosen targets, parameters and memory."""
    kept = set(best.extra["kept_blocks"])
    width = best.targets.get("intermediate_size")
    s = np.asarray(scores[depth], np.float64)
    blocks = []
    for i, layer in enumerate(parent_cfg.layers):
        row = {"block": i, "kind": layer.kind, "score": float(s[i]), "kept": i in kept}
        if isinstance(layer, MLPConfig):
            row["width"] = (width or layer.intermediate) if i in kept else 0
            row["parent_width"] = layer.intermediate
        blocks.append(row)
    return {
        "targets": best.targets,
        "params": best.params,
        "memory_bytes": best.memory,
        "depth_ranking": depth,
        "blocks": blocks,
    }


def grid_axes(cfg, mini: MiniPuzzleConfig) -> dict[str, list[int]]:
    """The values searched per axis (for the report)."""
    return axis_choices(cfg, mini.space(cfg))


def _memory(cfg, mini: MiniPuzzleConfig) -> int:
    return memory_bytes(cfg, batch=mini.memory_batch, context=mini.memory_context)["total"]


def _budget_text(cfg: MiniPuzzleConfig) -> str:
    parts = []
    if cfg.params is not None:
        parts.append(describe(cfg.params))
    if cfg.memory_gb is not None:
        parts.append(
            f"{cfg.memory_gb} GB at batch {cfg.memory_batch} x context {cfg.memory_context}"
        )
    return ", ".join(parts)
