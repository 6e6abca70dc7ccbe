"""One elastic run, as a library function: rank, permute, build the space, train.

:func:`train_elastic` permutes the parent into importance order, builds its elastic space
(depth from the scores' ranking, the iterative normalized-MSE one by default) and trains the
permuted parent through :class:`~jaxprune.elastic.objective.ElasticView` with
:func:`jaxprune.train.run`, distilling from the frozen original parent. OUT then holds the
trained parent (a native model, in importance order), ``router.npz`` and ``elastic.json``
(budgets, each budget's choices and parameter count, the space's arguments), from which
:func:`load_elastic` / :func:`child` extract any trained budget's child.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxprune.converters.native import load_native
from jaxprune.elastic.extract import child_memory, child_params, extract
from jaxprune.elastic.objective import ElasticConfig, ElasticView
from jaxprune.elastic.permute import permute_to_importance
from jaxprune.elastic.space import AXES, DEFAULT_FRACTIONS, ElasticSpace, build_space
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.pruning.masks import full_mask
from jaxprune.pruning.scoring import Scores
from jaxprune.train.config import TrainConfig
from jaxprune.train.trainer import RunResult, run


@dataclasses.dataclass(frozen=True)
class SpaceArgs:
    """The arguments of :func:`jaxprune.elastic.space.build_space` (saved with the run)."""

    axes: tuple[str, ...] = AXES
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    max_skip: float = 0.25
    uniform: bool = False
    align: int = 8
    depth_key: str = "depth_nmse"

    def build(self, cfg, depth: np.ndarray | None) -> ElasticSpace:
        """The space of ``cfg`` (a permuted parent) with these arguments."""
        return build_space(
            cfg,
            depth,
            axes=self.axes,
            fractions=self.fractions,
            max_skip=self.max_skip,
            uniform=self.uniform,
            align=self.align,
        )


def resolve_budgets(values: Sequence[float], parent_params: int) -> tuple[float, ...]:
    """Budgets as parameter counts: values <= 1 are fractions of the parent, values from
    1000 up counts (``4e9``). UserError for a fraction above 1, a budget above the parent
    or a repeated one."""
    out = []
    for v in values:
        if 1.0 < float(v) < 1000:
            raise UserError(f"elastic: budget {v} is a fraction above 1 (counts look like 4e9)")
        n = float(v) * parent_params if float(v) <= 1.0 else float(v)
        if not n > 0 or n > parent_params * (1 + 1e-9):
            raise UserError(f"elastic: budget {v} is outside (0, the parent's {parent_params:,})")
        out.append(min(n, float(parent_params)))
    if len(set(out)) != len(out):
        raise UserError(f"elastic: repeated budget in {list(values)}")
    return tuple(out)


def prepare(parent: HybridLM, scores: Scores, args: SpaceArgs) -> tuple[HybridLM, ElasticSpace]:
    """(the permuted parent, its space)."""
    depth = None
    if "depth" in args.axes and args.max_skip > 0:
        if args.depth_key not in scores.scores:
            raise UserError(
                f"elastic: the scores have no {args.depth_key} ranking (score with the "
                "nmse depth method, or leave depth out of the axes)"
            )
        depth = scores.scores[args.depth_key]
    permuted, _ = permute_to_importance(parent, scores.scores)
    return permuted, args.build(permuted.config, depth)


def train_elastic(
    parent: HybridLM,
    scores: Scores,
    *,
    train_source,
    out: str | Path,
    train: TrainConfig,
    elastic: ElasticConfig,
    space_args: SpaceArgs = SpaceArgs(),
    resume: bool = False,
    eval_source=None,
    family: str | None = None,
    hf_config: dict | None = None,
    aux_dir: str | Path | None = None,
) -> RunResult:
    """Train ``parent`` elastically (``elastic.budgets`` resolved to counts; see
    :func:`resolve_budgets`); ``train``'s loss must use the teacher (distillation)."""
    permuted, space = prepare(parent, scores, space_args)
    smallest = {a.name: [a.n_choices - 1] * len(a.rows) for a in space.axes}
    mem = elastic.memory
    low = child_params(space, smallest) if mem is None else child_memory(space, smallest, mem)
    unit = "parameters" if mem is None else "bytes"
    for b in elastic.budgets:
        if b < low:
            raise UserError(
                f"elastic: budget {b:,.0f} is below the smallest child these axes allow "
                f"({low:,} {unit})"
            )
    meta = {
        "space_args": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(space_args).items()
        },
        "depth_scores": None
        if space_args.depth_key not in scores.scores
        else [float(x) for x in np.asarray(scores.scores[space_args.depth_key])],
    }
    view = ElasticView(space, elastic, train.steps, train.optim.lr, full_mask(permuted), meta=meta)
    return run(
        train,
        student=permuted,
        train_source=train_source,
        out=out,
        teacher=parent,
        eval_source=eval_source,
        resume=resume,
        view=view,
        family=family,
        hf_config=hf_config,
        aux_dir=aux_dir,
    )


@dataclasses.dataclass(frozen=True)
class Elastic:
    """A trained elastic checkpoint: the parent, its space and each budget's child record."""

    parent: HybridLM
    space: ElasticSpace
    info: dict
    meta: dict = dataclasses.field(default_factory=dict)  # the parent's native metadata

    def child_record(self, budget: float) -> dict:
        """The trained child of ``budget`` (a fraction <= 1 or a count)."""
        full = self.info.get("parent_cost", self.info["parent_params"])
        want = budget * full if budget <= 1.0 else budget
        for c in self.info["children"]:
            if abs(c["budget"] - want) <= 1e-6 * full:
                return c
        trained = ", ".join(f"{c['budget'] / full:.3g}" for c in self.info["children"])
        if self.info.get("metric") == "memory_bytes":
            trained += " of the parent's memory; or the byte counts"
        raise UserError(f"elastic: budget {budget} was not trained (trained: {trained})")

    def child(self, budget: float) -> HybridLM:
        return extract(self.parent, self.space, self.child_record(budget)["choices"])


def load_elastic(path: str | Path) -> Elastic:
    """An elastic run directory (``jaxprune elastic``'s OUT)."""
    path = Path(path)
    meta = path / "elastic.json"
    if not meta.is_file():
        raise UserError(f"{path}: not an elastic checkpoint (no elastic.json)")
    info = json.loads(meta.read_text())
    parent, native = load_native(path)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in info["space_args"].items()}
    depth = None if info.get("depth_scores") is None else np.asarray(info["depth_scores"])
    space = SpaceArgs(**args).build(parent.config, depth)
    return Elastic(parent, space, info, native)
