"""Puzzle's full mode: a per-block variant library, scored by replace-one-block damage
(optionally after blockwise local distillation), one variant per block chosen by a MIP
under parameter / active-parameter / memory / latency budgets, and the top few solutions
ranked on held-out rows by KL to the parent (or by loss after a short distillation).
:func:`run_puzzle` is what ``jaxprune puzzle --mode full`` and ``compress`` (gin
``CompressConfig.puzzle``) call.

Scoring and BLD are cached in ``cache_dir`` (:mod:`jaxprune.puzzle.cache`), keyed by what
they depend on, so a rerun with a new budget or top-k re-solves in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.pruning.materialize import materialize
from jaxprune.puzzle import cache as pcache
from jaxprune.puzzle.library import LibraryConfig, Variant, assemble, build_library, shared_costs
from jaxprune.puzzle.mip import solve
from jaxprune.puzzle.score import (
    METRICS,
    BlockParams,
    block_distill,
    replace_one_scores,
    trained_parent,
)
from jaxprune.search.budget import describe, parse_params


def _optional_params(value):
    return None if value in (None, "", "none") else parse_params(value)


def _fractions(value) -> tuple[float, ...]:
    if isinstance(value, str):
        try:
            value = [float(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"puzzle: {value!r} is not a list of fractions (0.5,0.25)") from None
    return tuple(float(x) for x in value)


def _fraction_field(default: tuple[float, ...], what: str):
    return field(default=default, metadata={"help": what, "parse": _fractions})


@dataclass(frozen=True)
class PuzzleConfig:
    """One full-mode Puzzle run; ``jaxprune puzzle --mode full`` flags come from these fields."""

    params: float | None = field(
        default=None,
        metadata={"help": "cap on parameters: a fraction (0.6) or a count (4e9)",
                  "parse": _optional_params},
    )  # fmt: skip
    active_params: float | None = field(
        default=None,
        metadata={"help": "cap on active parameters (MoE): a fraction or a count",
                  "parse": _optional_params},
    )  # fmt: skip
    memory_gb: float | None = field(
        default=None, metadata={"help": "cap on weights + KV + SSM/conv state (GB)"}
    )
    latency_ms: float | None = field(
        default=None, metadata={"help": "cap on one measured decode step, batch 1 (ms)"}
    )
    memory_batch: int = field(default=1, metadata={"help": "batch of the memory cap"})
    memory_context: int = field(default=4096, metadata={"help": "context of the memory cap"})
    latency_context: int = field(default=64, metadata={"help": "prefill before timed decode"})
    ffn_divisor: int = field(default=64, metadata={"help": "FFN widths are multiples of this"})
    mlp_fractions: tuple[float, ...] = _fraction_field((1.0, 0.75, 0.5, 0.25), "FFN widths")
    mamba_fractions: tuple[float, ...] = _fraction_field((1.0, 0.75, 0.5), "Mamba heads/group")
    attention_fractions: tuple[float, ...] = _fraction_field((1.0, 0.5), "query heads/group")
    kv_fractions: tuple[float, ...] = _fraction_field((0.5,), "KV groups kept")
    expert_fractions: tuple[float, ...] = _fraction_field((1.0, 0.5), "experts kept")
    moe_width_fractions: tuple[float, ...] = _fraction_field((1.0, 0.5), "expert widths")
    removable: bool = field(default=True, metadata={"help": "blocks may be removed"})
    score_metric: str = field(
        default="kl", metadata={"help": "replace-one-block damage", "choices": METRICS}
    )
    score_samples: int = field(default=32, metadata={"help": "rows scoring / BLD / KD train on"})
    bld_steps: int = field(default=0, metadata={"help": "blockwise local distillation steps"})
    bld_lr: float = field(default=1e-3, metadata={"help": "its learning rate (Adam)"})
    top_k: int = field(default=3, metadata={"help": "best MIP solutions ranked"})
    mip_gap: float = field(default=1e-4, metadata={"help": "MIP relative optimality gap"})
    mip_time_limit: float = field(default=300.0, metadata={"help": "MIP time limit (s)"})
    distill_steps: int = field(
        default=0, metadata={"help": "short distillation of the top_k (0: rank zero-shot)"}
    )
    distill_lr: float = field(default=1e-3, metadata={"help": "its learning rate"})
    eval_samples: int = field(
        default=64, metadata={"help": "held-out rows the top_k are ranked on"}
    )

    def __post_init__(self):
        for name in ("params", "active_params"):
            object.__setattr__(self, name, _optional_params(getattr(self, name)))
        for name in ("mlp_fractions", "mamba_fractions", "attention_fractions",
                     "kv_fractions", "expert_fractions", "moe_width_fractions"):  # fmt: skip
            object.__setattr__(self, name, _fractions(getattr(self, name)))
        if all(getattr(self, k) is None for k in ("params", "active_params", "memory_gb",
                                                   "latency_ms")):  # fmt: skip
            raise UserError("puzzle: give a budget: params, active_params, memory_gb or latency_ms")
        for name in ("memory_gb", "latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UserError(f"puzzle: {name} must be > 0, got {value}")
        for name in ("memory_batch", "memory_context", "latency_context", "ffn_divisor",
                     "score_samples", "top_k", "eval_samples"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise UserError(f"puzzle: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.mip_gap < 1 or not self.mip_time_limit > 0:
            raise UserError("puzzle: mip_gap must be in [0, 1) and mip_time_limit > 0")
        if self.bld_steps < 0 or self.distill_steps < 0:
            raise UserError("puzzle: bld_steps and distill_steps must be >= 0")
        if self.score_metric not in METRICS:
            raise UserError(f"puzzle: score_metric must be one of {METRICS}")
        self.library()  # validates the fractions

    def library(self) -> LibraryConfig:
        return LibraryConfig(
            mlp_fractions=self.mlp_fractions,
            mamba_fractions=self.mamba_fractions,
            attention_fractions=self.attention_fractions,
            kv_fractions=self.kv_fractions,
            expert_fractions=self.expert_fractions,
            moe_width_fractions=self.moe_width_fractions,
            removable=self.removable,
            divisor=self.ffn_divisor,
            batch=self.memory_batch,
            context=self.memory_context,
        )

    def budget_text(self) -> str:
        parts = []
        if self.params is not None:
            parts.append(describe(self.params))
        if self.active_params is not None:
            parts.append(f"active {describe(self.active_params)}")
        if self.memory_gb is not None:
            parts.append(
                f"{self.memory_gb} GB at batch {self.memory_batch} x context {self.memory_context}"
            )
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms} ms per decode step")
        return ", ".join(parts)


def limits(model_cfg, cfg: PuzzleConfig) -> dict[str, float]:
    """The absolute budget per cost name (``params``, ``active``, ``memory``, ``latency``)."""
    c = count_params(model_cfg)
    out = {}
    for name, key, value in (("params", "total", cfg.params), ("active", "active",
                                                               cfg.active_params)):  # fmt: skip
        if value is not None:
            out[name] = float(value * c[key] if value <= 1 else value)
    if cfg.memory_gb is not None:
        out["memory"] = cfg.memory_gb * 1e9
    if cfg.latency_ms is not None:
        out["latency"] = float(cfg.latency_ms)
    return out


def check_budget(model_cfg, cfg: PuzzleConfig) -> dict[str, float]:
    """The limits; refuses (before any work) a budget that admits the parent, or one below
    what the parent's shared part (embeddings, LM head) alone costs."""
    from jaxprune.search.space import memory_bytes

    lim = limits(model_cfg, cfg)
    shared = shared_costs(model_cfg, cfg.library())
    c = count_params(model_cfg)
    mem = memory_bytes(model_cfg, batch=cfg.memory_batch, context=cfg.memory_context)["total"]
    parent = {"params": c["total"], "active": c["active"], "memory": mem}
    if "latency" not in lim and all(parent[k] <= v for k, v in lim.items()):
        raise UserError(
            f"puzzle: the budget ({cfg.budget_text()}) admits the parent itself "
            f"({c['total']:,} params, {mem / 1e9:.4g} GB); give a smaller budget"
        )
    for k, v in lim.items():
        if k in shared and v <= shared[k]:
            raise UserError(
                f"puzzle: the {k} budget {v:,.0f} does not even cover the embeddings and LM "
                f"head ({shared[k]:,}); raise it"
            )
    return lim


@dataclass
class PuzzleResult:
    """The library, per-block scores, the ranked MIP solutions (best first) and the winner."""

    library: list[list[Variant]]
    scores: list[np.ndarray]
    solutions: list[dict]
    best: dict
    student: HybridLM
    shared: dict
    bld_error: dict[int, dict[int, tuple[float, float]]] = field(default_factory=dict)

    def chosen(self, sol: dict | None = None) -> list[Variant]:
        choice = (sol or self.best)["choice"]
        return [row[k] for row, k in zip(self.library, choice, strict=True)]


@jax.jit
def _kl_sum(parent, student, tokens):
    p = jax.nn.log_softmax(parent(tokens), axis=-1)
    q = jax.nn.log_softmax(student(tokens), axis=-1)
    return jnp.sum(jnp.exp(p) * (p - q))


def _rank(parent, student, rows, batch_size) -> dict:
    """Held-out loss, accuracy, top-1 agreement and KL(parent || student) per token."""
    from jaxprune.evaluation.agreement import next_token_metrics

    top = next_token_metrics(parent, rows, batch_size=batch_size)["top"]
    m = next_token_metrics(student, rows, parent_top=top, batch_size=batch_size)
    kl = sum(float(_kl_sum(parent, student, jnp.asarray(rows[i : i + batch_size])))
             for i in range(0, len(rows), batch_size))  # fmt: skip
    return {"loss": m["loss"], "accuracy": m["accuracy"], "agreement": m["agreement"],
            "kl": kl / rows.size}  # fmt: skip


def run_puzzle(
    parent: HybridLM,
    scores: dict,
    rows: np.ndarray,
    eval_rows: np.ndarray,
    cfg: PuzzleConfig,
    *,
    cache_dir: Path | None = None,
    batch_size: int = 8,
    log: Callable[[str], None] = lambda s: None,
) -> PuzzleResult:
    """``rows`` (N, T + 1): scoring, BLD and the short distillation train on the first
    ``score_samples``; ``eval_rows`` (M, T + 1, held out) rank the top_k."""
    lim = check_budget(parent.config, cfg)
    lib_cfg = cfg.library()
    rows = np.asarray(rows)[: cfg.score_samples]
    eval_rows = np.asarray(eval_rows)[: cfg.eval_samples]
    library = build_library(parent.config, scores, lib_cfg)
    n_var = sum(len(r) for r in library)
    log(f"puzzle: library of {n_var} variants over {len(library)} blocks")
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    store = pcache.Store(cache_dir, parent, scores, rows, cfg, log)

    block_scores = store.get("scores", lambda: replace_one_scores(
        parent, scores, library, batches, metric=cfg.score_metric))  # fmt: skip
    trained: BlockParams = {}
    bld_error: dict[int, dict[int, tuple[float, float]]] = {}
    if cfg.bld_steps:
        trained, losses = store.get_bld(parent, library, lambda: block_distill(
            parent, scores, library, [b[:, :-1] for b in batches], steps=cfg.bld_steps,
            lr=cfg.bld_lr))  # fmt: skip
        for i, (idx, _) in trained.items():
            e = np.asarray(losses[i], float)
            bld_error[i] = {k: (e[0, n], e[1, n]) for n, k in enumerate(idx)}
        block_scores = store.get("bld_scores", lambda: replace_one_scores(
            parent, scores, library, batches, metric=cfg.score_metric,
            trained=trained))  # fmt: skip

    shared = dict(shared_costs(parent.config, lib_cfg))
    costs = {
        "params": [np.array([v.params for v in r], float) for r in library],
        "active": [np.array([v.active for v in r], float) for r in library],
        "memory": [np.array([v.memory for v in r], float) for r in library],
    }
    if "latency" in lim:
        from jaxprune.puzzle.latency import latency_costs

        costs["latency"], shared["latency"] = store.get_latency(
            lambda: latency_costs(parent.config, library, context=cfg.latency_context)
        )
    rel = {k: v - shared[k] for k, v in lim.items()}
    if any(v < 0 for v in rel.values()):
        bad = next(k for k, v in rel.items() if v < 0)
        raise UserError(f"puzzle: the {bad} budget is below the shared cost ({shared[bad]:.4g})")
    removal = [np.array([v.removed for v in r]) for r in library]
    sols = solve(block_scores, costs, rel, top_k=cfg.top_k, min_kept=1, removal=removal,
                 gap=cfg.mip_gap, time_limit=cfg.mip_time_limit)  # fmt: skip
    log(f"puzzle: {len(sols)} solutions from the MIP")

    distill = None
    if cfg.distill_steps:
        from jaxprune.search.distill import make_short_distill

        distill = make_short_distill(parent, rows, steps=cfg.distill_steps, lr=cfg.distill_lr,
                                     batch_size=min(batch_size, len(rows)))  # fmt: skip
    ranked, students = [], []
    for n, s in enumerate(sols, 1):
        chosen = [row[k] for row, k in zip(library, s.choice, strict=True)]
        student = materialize(trained_parent(parent, s.choice, trained),
                              assemble(parent.config, scores, chosen))  # fmt: skip
        entry = {"choice": list(s.choice), "objective": s.objective,
                 "costs": {k: v + shared[k] for k, v in s.costs.items()},
                 "variants": [v.name for v in chosen],
                 **_rank(parent, student, eval_rows, batch_size)}  # fmt: skip
        if distill is not None:
            from jaxprune.evaluation import evaluate_lm_loss

            student = distill(student)
            entry["distilled_loss"] = evaluate_lm_loss(student, eval_rows,
                                                       batch_size=batch_size)["loss"]  # fmt: skip
        log(f"  solution {n}/{len(sols)}: score {s.objective:.4g}, loss {entry['loss']:.4f}"
            + (f", distilled {entry['distilled_loss']:.4f}" if distill else ""))  # fmt: skip
        ranked.append(entry)
        students.append(student)
    key = "distilled_loss" if distill is not None else "kl"  # zero-shot: the most faithful
    best_i = int(np.argmin([e[key] for e in ranked]))
    for i, e in enumerate(ranked):
        e["chosen"] = i == best_i
    return PuzzleResult(library, block_scores, ranked, ranked[best_i], students[best_i], shared,
                        bld_error)  # fmt: skip


def choices(parent_cfg, result: PuzzleResult) -> dict:
    """``choices.json``: per parent block its kind, chosen variant, score and parameters."""
    blocks = []
    for i, (row, k) in enumerate(zip(result.library, result.best["choice"], strict=True)):
        v = row[k]
        blocks.append({
            "block": i, "kind": parent_cfg.layers[i].kind, "variant": v.name,
            "targets": v.targets, "removed": v.removed, "score": float(result.scores[i][k]),
            "params": v.params, "parent_params": row[0].params, "active": v.active,
            "memory_bytes": v.memory,
            "bld_error": result.bld_error.get(i, {}).get(k),
        })  # fmt: skip
    return {"mode": "full", "costs": result.best["costs"], "shared": result.shared,
            "blocks": blocks}  # fmt: skip
