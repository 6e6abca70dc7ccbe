"""Calibrate and score a model: the one library function behind ``jaxprune importance``,
``prune``, ``search`` and the ``compress`` pipeline.

:func:`score_model` runs the Minitron activation statistics over calibration rows (batched,
sharded over the data axis of a mesh when one is given or when several devices are
present), turns them into per-group scores with the chosen aggregation, and adds the
requested depth rankings. The result is a :class:`Scores` record that saves to and loads
from one ``.npz`` (see :mod:`jaxprune.pruning.scores_io`).

:class:`ScoreConfig` also carries the ablation switches (:mod:`jaxprune.pruning.ranking`):
``ranking="random"`` with ``seed`` makes :func:`score_with` (and :func:`with_ranking` on
loaded scores) return random rankings of the same shapes, pruned with the same group
structure; ``mamba_grouping="unaware"`` is passed to ``prune`` / ``plan`` by the commands
and the pipeline (scores do not depend on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from jaxprune.config import ModelConfig
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.pruning import depth
from jaxprune.pruning.importance import AGGREGATIONS, calibrate, scores
from jaxprune.pruning.ranking import GROUPINGS, RANKINGS, check_switches, ranked_scores
from jaxprune.pruning.scores_io import load_scores, save_scores

#: depth method name -> the score key it writes.
DEPTH_METHODS = {
    "block_influence": "depth_block_influence",
    "loss": "depth_loss",
    "nmse": "depth_nmse",
    "hidden_mse": "depth_hidden_mse",
}


@dataclass(frozen=True)
class ScoreConfig:
    """How calibration runs; the CLI flags of ``importance`` / ``prune`` / ``search`` and
    the ``compress`` gin bindings are generated from these fields."""

    samples: int = field(default=1024, metadata={"help": "calibration sequences"})
    seq_len: int = field(default=512, metadata={"help": "tokens per calibration sequence"})
    batch_size: int = field(default=8, metadata={"help": "sequences per calibration batch"})
    aggregation: str = field(
        default="l2", metadata={"help": "over samples", "choices": AGGREGATIONS}
    )
    depth_method: str = field(
        default="block_influence",
        metadata={"help": "depth ranking used to drop layers", "choices": tuple(DEPTH_METHODS)},
    )
    depth_batches: int = field(
        default=4, metadata={"help": "batches used by the loss / nmse depth rankings"}
    )
    ranking: str = field(
        default="importance",
        metadata={
            "help": "what decides the kept units: the calibrated importance, or random "
            "scores from --seed (same group structure; an ablation baseline)",
            "choices": RANKINGS,
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of --ranking random"})
    mamba_grouping: str = field(
        default="aware",
        metadata={
            "help": "aware: Mamba heads kept within each B/C group; unaware: ranked across "
            "groups, the top k reshaped into n_groups groups in index order, so some heads "
            "read another group's B/C (an ablation; used when pruning)",
            "choices": GROUPINGS,
        },
    )

    def __post_init__(self):
        for name in ("samples", "seq_len", "batch_size", "depth_batches"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"calibration: {name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise UserError(f"calibration: seq_len must be >= 2, got {self.seq_len}")
        if self.aggregation not in AGGREGATIONS:
            raise UserError(
                f"calibration: aggregation {self.aggregation!r}; choose from "
                + ", ".join(AGGREGATIONS)
            )
        if self.depth_method not in DEPTH_METHODS:
            raise UserError(
                f"calibration: depth method {self.depth_method!r}; choose from "
                + ", ".join(DEPTH_METHODS)
            )
        try:
            check_switches(self.ranking, self.seed, self.mamba_grouping)
        except UserError as e:
            raise UserError(f"calibration: {e}") from None

    @property
    def depth_key(self) -> str:
        """The score key of the chosen depth ranking (e.g. ``depth_block_influence``)."""
        return DEPTH_METHODS[self.depth_method]


@dataclass(frozen=True)
class Scores:
    """Importance scores of one model: ``scores`` {group: array} (see
    :func:`jaxprune.pruning.importance.scores`, plus ``depth_<method>`` (L,) rankings),
    the raw calibration ``stats`` sums and ``meta`` (model, data, samples, seq_len,
    aggregation, depth methods)."""

    scores: dict[str, np.ndarray]
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def depth(self, method: str) -> str:
        """The score key of depth ``method``; UserError when these scores lack it."""
        key = DEPTH_METHODS[method]
        if key not in self.scores:
            raise UserError(
                f"the scores have no {method} depth ranking; rerun importance with "
                f"--depth-method {method}"
            )
        return key

    def save(self, path: str | Path, cfg: ModelConfig) -> Path:
        """Write one ``.npz`` (atomically) tagged with ``cfg``'s digest."""
        return save_scores(path, self.scores, self.stats, self.meta, cfg)

    @classmethod
    def load(cls, path: str | Path, cfg: ModelConfig | None = None) -> Scores:
        """Read a scores file; with ``cfg``, refuse scores of another architecture."""
        sc, meta = load_scores(path, cfg)
        return cls(sc, {}, meta)


def calibration_mesh(batch_size: int):
    """A data-parallel mesh over every local device when the batch splits evenly across
    them (the per-device sums then add up inside the jitted reduction), else None."""
    from jaxprune.sharding import make_mesh

    n = jax.device_count()
    if n > 1 and batch_size % n == 0:
        return make_mesh(data=-1)
    return None


def score_model(
    model: HybridLM,
    rows: np.ndarray,
    *,
    aggregation: str = "l2",
    depth_methods: Sequence[str] = ("block_influence",),
    batch_size: int = 8,
    depth_batches: int = 4,
    mesh=None,
    progress: bool = False,
    meta: dict | None = None,
) -> Scores:
    """Calibrate ``model`` on ``rows`` (N, T) int token ids and score every prunable group.

    ``depth_methods``: depth rankings to add (``block_influence`` comes with the
    statistics for free; ``loss``, ``nmse`` and ``hidden_mse`` run extra forwards over the first
    ``depth_batches`` batches). ``mesh``: shard each batch over its data axis (default:
    :func:`calibration_mesh`).
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or len(rows) == 0:
        raise UserError(f"calibration needs (rows, T) token ids, got shape {rows.shape}")
    for method in depth_methods:
        if method not in DEPTH_METHODS:
            raise UserError(f"depth method {method!r}; choose from {', '.join(DEPTH_METHODS)}")
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    mesh = calibration_mesh(batch_size) if mesh is None else mesh
    shardings = None
    if mesh is not None:
        from jaxprune.sharding import batch_sharding

        shardings = batch_sharding(mesh)
    stats = calibrate(
        model, batches, aggregation=aggregation, progress=progress, shardings=shardings
    )
    sc = scores(stats, model, aggregation)
    if "loss" in depth_methods:
        sc["depth_loss"] = depth.loss_increase(model, batches[:depth_batches])
    if "nmse" in depth_methods:
        sc["depth_nmse"] = depth.iterative_nmse(model, batches[:depth_batches])
    if "hidden_mse" in depth_methods:
        sc["depth_hidden_mse"] = depth.hidden_mse(model, batches[:depth_batches])
    info = {
        **(meta or {}),
        "samples": int(len(rows)),
        "seq_len": int(rows.shape[1]),
        "aggregation": aggregation,
        "depth_method": depth_methods[-1] if depth_methods else "block_influence",
        "depth_methods": list(dict.fromkeys(["block_influence", *depth_methods])),
    }
    return Scores(sc, stats, info)


def with_ranking(sc: Scores, cfg: ScoreConfig) -> Scores:
    """``sc`` as ``cfg.ranking`` ranks: unchanged for ``importance``; for ``random`` its
    rankings replaced by :func:`~jaxprune.pruning.ranking.random_scores` from ``cfg.seed``
    (the statistics are kept; ``meta`` records ranking and seed). Idempotent."""
    if cfg.ranking == "importance":
        return sc
    meta = {**sc.meta, "ranking": cfg.ranking, "seed": int(cfg.seed)}
    return Scores(ranked_scores(sc.scores, cfg.ranking, cfg.seed), sc.stats, meta)


def score_with(model: HybridLM, rows: np.ndarray, cfg: ScoreConfig, **kw) -> Scores:
    """:func:`score_model` with the settings of a :class:`ScoreConfig`, ranked as
    ``cfg.ranking`` says (:func:`with_ranking`)."""
    sc = score_model(
        model,
        rows,
        aggregation=cfg.aggregation,
        depth_methods=(cfg.depth_method,),
        batch_size=cfg.batch_size,
        depth_batches=cfg.depth_batches,
        **kw,
    )
    return with_ranking(sc, cfg)
