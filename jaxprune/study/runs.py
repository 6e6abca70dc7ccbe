"""The study's runs, each cached (:class:`~jaxprune.study.cache.RunCache`): the teacher,
one calibration per seed, each pruning (with its zero-shot held-out loss), each
distillation (interrupted ones resumed with the trainer's ``resume``), each from-scratch
run and decode speed per architecture. Every run calls the library functions the commands
use (``score_model``, ``prune``, ``jaxprune.train.run``, ``evaluate_lm_loss``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jaxprune.config import ModelConfig
from jaxprune.converters.native import load_native, save_model
from jaxprune.counts import count_params
from jaxprune.evaluation import evaluate_lm_loss
from jaxprune.nn.model import init_model
from jaxprune.pruning.materialize import shrink_config
from jaxprune.pruning.prune import plan, prune
from jaxprune.pruning.scoring import ScoreConfig, Scores, score_model, with_ranking
from jaxprune.small_lm import DECODE_REPS, decode_tps, small_optim, small_train_config, train_small
from jaxprune.study.cache import RunCache
from jaxprune.study.config import StudyConfig
from jaxprune.study.data import Split


def resume_or_clear(out: Path) -> bool:
    """True when ``out`` holds an interrupted run's checkpoints (resume it); else ``out``
    is removed so the run starts clean."""
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        return True
    shutil.rmtree(out, ignore_errors=True)
    return False


def train_resumable(tc, model, split: Split, out: Path, teacher=None):
    """Train into ``out``, resuming its checkpoint when an earlier run was interrupted;
    the checkpoints are dropped once the trained model is exported."""
    resume = resume_or_clear(out)
    trained = train_small(tc, model, split.train_corpus(), out, teacher, resume)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return trained


@dataclass(frozen=True)
class Variant:
    """One pruning recipe: targets plus the ablation switches."""

    name: str
    targets: dict
    ranking: str = "importance"
    mamba_grouping: str = "aware"

    def inputs(self) -> dict:
        return {"targets": self.targets, "ranking": self.ranking, "grouping": self.mamba_grouping}


@dataclass
class Study:
    """The state every run needs: sizes, data split, teacher and the cache. The teacher's
    weights are loaded (or trained) only when a run that is not cached needs them."""

    cfg: StudyConfig
    split: Split
    teacher_config: ModelConfig
    load_teacher: Callable[[], object]
    teacher_key: str
    cache: RunCache
    _scores: dict = field(default_factory=dict)
    _teacher: object = None

    @property
    def teacher(self):
        if self._teacher is None:
            self._teacher = self.load_teacher()
        return self._teacher

    @property
    def data_key(self) -> dict:
        return {"source": self.split.source, "n_train": self.split.n_train}

    def held_rows(self) -> np.ndarray:
        return self.split.held_rows(self.cfg.seq_len, self.cfg.eval_rows)

    def loss(self, model) -> float:
        return float(evaluate_lm_loss(model, self.held_rows(), batch_size=8)["loss"])

    def teacher_loss(self) -> float:
        """The teacher's held-out loss (cached)."""
        inputs = {"teacher": self.teacher_key, "data": self.data_key, "rows": self.cfg.eval_rows}
        return self.cache.get("eval", inputs, lambda d: {"loss": self.loss(self.teacher)})["loss"]

    def scores(self, seed: int) -> Scores:
        """Calibration on the seed's subset of the training part (cached .npz)."""
        if seed in self._scores:
            return self._scores[seed]
        inputs = {
            "teacher": self.teacher_key,
            "seed": seed,
            "rows": self.cfg.calib_rows,
            "seq_len": self.cfg.seq_len,
            "data": self.data_key,
        }

        def compute(d: Path) -> dict:
            rows = self.split.calib_rows(self.cfg.seq_len, self.cfg.calib_rows, seed)
            sc = score_model(self.teacher, rows, batch_size=8)
            sc.save(d / "scores.npz", self.teacher_config)
            return {"path": "scores.npz"}

        self.cache.get("scores", inputs, compute, need=("scores.npz",))
        sc = Scores.load(self.cache.dir("scores", inputs) / "scores.npz", self.teacher_config)
        self._scores[seed] = sc
        return sc

    def ranked(self, v: Variant, seed: int) -> dict:
        sc = with_ranking(self.scores(seed), ScoreConfig(ranking=v.ranking, seed=seed))
        return sc.scores

    def params_of(self, targets: dict, seed: int = 0) -> int:
        """Parameter count of the teacher pruned to ``targets`` (no weights touched)."""
        cfg = self.teacher_config
        kept = plan(cfg, self.scores(seed).scores, targets)
        return count_params(shrink_config(cfg, kept))["total"]

    def _prune_inputs(self, v: Variant, seed: int) -> dict:
        return {
            "teacher": self.teacher_key,
            "seed": seed,
            **v.inputs(),
            "data": self.data_key,
            "rows": self.cfg.calib_rows,
            "eval_rows": self.cfg.eval_rows,
            "seq_len": self.cfg.seq_len,
        }

    def pruned(self, v: Variant, seed: int, need_model: bool = False) -> dict:
        """Prune with the seed's scores; saves the model; {params, zero_shot_loss, config}.
        ``need_model``: the pruned weights are about to be read (redo a results-only run)."""
        inputs = self._prune_inputs(v, seed)

        def compute(d: Path) -> dict:
            m = prune(
                self.teacher, self.ranked(v, seed), v.targets, mamba_grouping=v.mamba_grouping
            )
            save_model(d / "model", m)
            return {
                "params": count_params(m.config)["total"],
                "zero_shot_loss": self.loss(m),
                "config": m.config.to_dict(),
            }

        need = ("model/jaxprune.json",) if need_model else ()
        return self.cache.get("prune", inputs, compute, need=need)

    def _train(self, d: Path, model, steps: int, seed: int, teacher) -> float:
        tc = small_train_config(
            steps,
            batch_size=self.cfg.batch_size,
            seq_len=self.cfg.seq_len,
            lr=self.cfg.lr,
            seed=seed,
            distill=teacher is not None,
        )
        return self.loss(train_resumable(tc, model, self.split, d / "train", teacher))

    def distilled(self, v: Variant, seed: int) -> dict:
        """Distill the seed's pruned model from the teacher (seed = data order too)."""
        self.pruned(v, seed)
        inputs = {
            "prune": self._prune_inputs(v, seed),
            "steps": self.cfg.distill_steps,
            "batch": self.cfg.batch_size,
            "seq_len": self.cfg.seq_len,
            "lr": self.cfg.lr,
            "optim": asdict(small_optim(self.cfg.lr)),
        }

        def compute(d: Path) -> dict:
            self.pruned(v, seed, need_model=True)
            model = load_native(self.cache.dir("prune", self._prune_inputs(v, seed)) / "model")[0]
            return {"loss": self._train(d, model, self.cfg.distill_steps, seed, self.teacher)}

        return self.cache.get("distill", inputs, compute)

    def scratch(self, config: dict, multiple: int, seed: int) -> dict:
        """The architecture ``config`` trained from random init for ``multiple`` x the
        distillation steps (cross-entropy only)."""
        steps = multiple * self.cfg.distill_steps
        inputs = {
            "config": config,
            "steps": steps,
            "seed": seed,
            "data": self.data_key,
            "batch": self.cfg.batch_size,
            "seq_len": self.cfg.seq_len,
            "lr": self.cfg.lr,
            "optim": asdict(small_optim(self.cfg.lr)),
            "eval_rows": self.cfg.eval_rows,
        }

        def compute(d: Path) -> dict:
            model = init_model(ModelConfig.from_dict(config), 1000 + seed)
            return {
                "loss": self._train(d, model, steps, seed, None),
                "tokens": steps * self.cfg.batch_size * self.cfg.seq_len,
            }

        return self.cache.get("scratch", inputs, compute)

    def decode(self, config: dict) -> float:
        """Greedy decode tokens/s of the architecture (random weights: speed only)."""
        inputs = {"config": config, "new": self.cfg.decode_new, "reps": DECODE_REPS}

        def compute(d: Path) -> dict:
            m = init_model(ModelConfig.from_dict(config), 0)
            return {"tok_s": decode_tps(m, prompt_len=16, new=self.cfg.decode_new)}

        return self.cache.get("decode", inputs, compute)["tok_s"]
