"""``jaxprune compress``: load -> (teacher correction) -> importance -> search or fixed targets
-> prune -> distill -> (DMC) -> evaluate -> export, every stage cached under OUT and
resumable.

Each stage calls the same library function as the separate command (:func:`score_with` as
``importance``, :func:`search_with` as ``search``, :func:`~jaxprune.pruning.prune.prune` as
``prune``, :func:`~jaxprune.train.run` as ``distill``, :func:`~jaxprune.dmc.run.retrofit_dmc`
as ``dmc``, :func:`evaluate_lm_loss` as ``eval``,
:func:`~jaxprune.converters.api.export` as ``export``) and writes its output atomically (a
native checkpoint, a scores file, a JSON). Everything is validated before OUT is touched
(targets, the budget, the data: :mod:`jaxprune.pipeline.checks`). Outputs are cached by
what each stage depends on (:mod:`jaxprune.pipeline.cache`): a rerun reuses the stages whose
inputs are unchanged and recomputes the first changed one and everything after it, saying
what changed; an interrupted distillation resumes from its own orbax checkpoints. gin
binds :class:`CompressConfig` (and the dataclasses it nests) in the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jaxprune.atomic import atomic_output_dir, atomic_write_text
from jaxprune.converters.api import export
from jaxprune.converters.native import load_native, save_native
from jaxprune.counts import count_params
from jaxprune.dmc.objective import DMCTrainConfig
from jaxprune.errors import UserError
from jaxprune.pipeline.cache import StageCache, data_fingerprint, model_fingerprint
from jaxprune.pruning.scoring import ScoreConfig, Scores, score_with
from jaxprune.puzzle.full import PuzzleConfig
from jaxprune.search.run import SearchConfig, search_with
from jaxprune.train import TrainConfig

if TYPE_CHECKING:
    from jaxprune.models import LoadedModel

#: Stage -> its outputs under OUT (the first marks it complete; all are removed on rerun).
OUTPUTS = {
    "teacher correction": ("teacher", "teacher_run"),
    "importance": ("scores.npz",),
    "architecture": ("arch.json", "search", "puzzle"),
    "prune": ("pruned",),
    "distillation": ("student",),
    "dmc": ("dmc",),
    "evaluation": ("eval.json",),
    "export": ("hf",),
}


@dataclass(frozen=True)
class CompressConfig:
    """One compression run. ``targets`` (HF config names), ``search`` (a budgeted uniform
    architecture search) or ``puzzle`` (full-mode Puzzle: one variant per block chosen by a
    MIP, a heterogeneous student) decide the student architecture; ``calibration`` says how
    importance is estimated (aggregation, depth ranking, samples) and which ablation
    switches prune (``ranking`` / ``seed``, ``mamba_grouping``), exactly as the
    ``importance`` / ``prune`` flags do. ``dmc`` adds a DMC retrofit of the distilled
    student (trained with ``dmc_train``, default the ``distill`` settings, distilling from
    the student as it was): a model that is smaller and also keeps a smaller KV cache."""

    model: str
    data: str
    out: str
    eval_data: str | None = None
    targets: dict = field(default_factory=dict)
    search: SearchConfig | None = None
    puzzle: PuzzleConfig | None = None
    calibration: ScoreConfig = field(default_factory=ScoreConfig)
    eval_rows: int = 256
    text_suffixes: tuple[str, ...] = (".txt",)
    teacher_correction: TrainConfig | None = None
    distill: TrainConfig = field(default_factory=TrainConfig)
    dmc: DMCTrainConfig | None = None
    dmc_train: TrainConfig | None = None
    export_dtype: str = "bf16"
    export_model_type: str | None = None
    export_per_layer_mlp: bool = False

    def __post_init__(self):
        given = [bool(self.targets), self.search is not None, self.puzzle is not None]
        if sum(given) != 1:
            raise UserError(
                "compress: give exactly one of targets, search (a budget) or puzzle (a budget)"
            )
        if self.eval_rows < 1:
            raise UserError(f"compress: eval_rows must be >= 1, got {self.eval_rows}")
        if self.dmc_train is not None and self.dmc is None:
            raise UserError("compress: dmc_train is set but dmc (the DMC stage) is not")

    @property
    def dmc_train_config(self) -> TrainConfig:
        """The DMC stage's training settings."""
        return self.dmc_train or self.distill


@dataclass
class _Inputs:
    """What the run reads, loaded and checked before OUT is created."""

    src: LoadedModel
    corpus: object
    calib_rows: object
    eval_rows: object
    model_fp: str
    data_fp: str
    eval_fp: str


def _prepare(cfg: CompressConfig) -> _Inputs:
    """Resolve the model and read the data, refusing bad input before any work (nothing is
    written): unknown or out-of-range targets, an unreachable budget, too little data."""
    from jaxprune.data import load_corpus, load_rows
    from jaxprune.data.pipeline import check_one_batch
    from jaxprune.data.rows import labelled
    from jaxprune.models import resolve_model
    from jaxprune.pipeline.checks import check_budget, check_targets

    src = resolve_model(cfg.model)
    if cfg.targets:
        check_targets(src.config, dict(cfg.targets))
    if cfg.search is not None:
        check_budget(src.config, cfg.search)
    if cfg.puzzle is not None:
        from jaxprune.puzzle.full import check_budget as check_puzzle_budget

        check_puzzle_budget(src.config, cfg.puzzle)
    tok, vocab = src.tokenizer, src.config.vocab_size
    with labelled(f"compress: data {cfg.data!r}"):
        corpus = load_corpus(
            cfg.data, tokenizer=tok, vocab_size=vocab, text_suffixes=cfg.text_suffixes
        )
    if cfg.dmc is not None:
        from jaxprune.dmc.retrofit import with_dmc

        with_dmc(src.config, None, cfg.dmc.blocks)  # UserError: no attention / bad blocks
    dmc_train = cfg.dmc_train_config if cfg.dmc is not None else None
    for name, tc in (("distill", cfg.distill), ("teacher_correction", cfg.teacher_correction),
                     ("dmc_train", dmc_train)):  # fmt: skip
        if tc is not None:
            what = f"compress: data {cfg.data!r} ({name})"
            check_one_batch(corpus, batch_size=tc.batch_size, seq_len=tc.seq_len, what=what)

    def rows(path: str, seq_len: int, n: int, label: str):
        with labelled(label):
            return load_rows(path, seq_len=seq_len, tokenizer=tok, max_rows=n, vocab_size=vocab)

    calib = cfg.calibration
    calib_rows = rows(cfg.data, calib.seq_len, calib.samples, "compress: calibration data")
    eval_path = cfg.eval_data or cfg.data
    eval_rows = rows(eval_path, cfg.distill.seq_len, cfg.eval_rows, "compress: eval data")
    data_fp = data_fingerprint(cfg.data, cfg.text_suffixes)
    eval_fp = data_fingerprint(cfg.eval_data, cfg.text_suffixes) if cfg.eval_data else data_fp
    model_fp = model_fingerprint(cfg.model, src.config.to_dict())
    return _Inputs(src, corpus, calib_rows, eval_rows, model_fp, data_fp, eval_fp)


def run_compress(cfg: CompressConfig, log=print) -> dict:
    """Run (or resume) every stage; returns the summary written to OUT/report.json."""
    from jaxprune.evaluation import evaluate_lm_loss
    from jaxprune.pruning.prune import prune

    inp = _prepare(cfg)
    src, teacher, calib = inp.src, inp.src.model, cfg.calibration
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compress_config.json", json.dumps(_jsonable(cfg), indent=2))
    cache = StageCache(out, OUTPUTS, log)

    teacher_key = None
    if cfg.teacher_correction is not None:
        teacher_key, teacher = _teacher_stage(cfg, inp, cache)
    else:
        cache.drop(["teacher correction"])  # turned off: importance sees the change

    scores_path = out / "scores.npz"
    key, action = cache.enter(
        "importance",
        "importance",
        {"model": inp.model_fp, "teacher correction": teacher_key, "data": inp.data_fp,
         "calibration": calib},
    )  # fmt: skip
    if action == "run":
        meta = {"model": str(cfg.model), "data": cfg.data}
        score_with(teacher, inp.calib_rows, calib, progress=True, meta=meta).save(
            scores_path, teacher.config
        )
        cache.finish("importance")
    scores = Scores.load(scores_path, teacher.config)
    depth = scores.depth(calib.depth_method)

    arch_inputs = {"importance": key, "targets": cfg.targets, "search": cfg.search}
    if cfg.puzzle is not None:
        arch_inputs["puzzle"] = cfg.puzzle
    if cfg.search is not None or cfg.puzzle is not None:
        arch_inputs["eval data"] = inp.eval_fp
        arch_inputs["eval settings"] = [cfg.eval_rows, cfg.distill.seq_len, calib.batch_size]
    label = "architecture (targets)"
    if cfg.search is not None or cfg.puzzle is not None:
        label = "architecture search" if cfg.search is not None else "architecture (puzzle)"
    key, action = cache.enter("architecture", label, arch_inputs)
    if action == "run":
        targets = dict(cfg.targets)
        if cfg.search is not None:
            result = search_with(
                teacher, scores.scores, inp.eval_rows, cfg.search,
                batch_size=calib.batch_size, depth=depth, mamba_grouping=calib.mamba_grouping,
            )  # fmt: skip
            with atomic_output_dir(out / "search") as tmp:
                result.write(tmp, data=_eval_data(cfg, inp.eval_rows[: cfg.search.eval_samples]))
            targets = result.best.targets
        arch = {"targets": targets}
        if cfg.puzzle is not None:
            arch = _puzzle_stage(cfg, inp, teacher, scores.scores, log=cache.log)
        atomic_write_text(out / "arch.json", json.dumps(arch, indent=2))
        cache.finish("architecture")
    arch = json.loads((out / "arch.json").read_text())
    targets = arch["targets"]

    pruned_dir = out / "pruned"
    what = f"prune to {targets}" if "puzzle" not in arch else "the puzzle's student"
    key, action = cache.enter("prune", what, {"architecture": key})
    if action == "run":
        if "puzzle" in arch:  # sliced (and BLD-trained) by the architecture stage
            small = load_native(out / "puzzle" / "student")[0]
        else:
            small = prune(teacher, scores.scores, targets, depth, calib.mamba_grouping)
        save_native(
            pruned_dir, small, family=src.family, hf_config=src.hf_config, aux_dir=src.source
        )
        cache.finish("prune")
    pruned, _ = load_native(pruned_dir)

    student_dir = out / "student"
    key, action = cache.enter(
        "distillation",
        "distillation",
        {"prune": key, "data": inp.data_fp, "distill": _train_settings(cfg.distill)},
        resumable=True,
    )
    if action != "reuse":
        _train(cfg.distill, pruned, teacher, inp.corpus, student_dir, src, action == "resume")
        cache.finish("distillation")
    student, _ = load_native(student_dir)
    final_dir, final = student_dir, student
    if cfg.dmc is not None:
        key, final = _dmc_stage(cfg, inp, cache, key, student)
        final_dir = out / "dmc"
    else:
        cache.drop(["dmc"])

    eval_settings = [cfg.eval_rows, cfg.distill.seq_len, calib.batch_size]
    _, action = cache.enter(
        "evaluation",
        "evaluation",
        {"distillation": key, "eval data": inp.eval_fp, "eval settings": eval_settings},
    )
    if action == "run":
        models = [("teacher", teacher), ("pruned", pruned), ("distilled", student)]
        if cfg.dmc is not None:
            models.append(("dmc", final))
        table = [
            _eval_row(name, m, inp.eval_rows, calib.batch_size, evaluate_lm_loss)
            for name, m in models
        ]
        record = {"rows": table}
        if cfg.dmc is not None:
            from jaxprune.dmc.measure import kv_compression

            record["kv_compression"] = kv_compression(
                final, inp.eval_rows, batch_size=calib.batch_size
            )
        atomic_write_text(out / "eval.json", json.dumps(record, indent=2))
        cache.finish("evaluation")
    summary = {"targets": targets, **json.loads((out / "eval.json").read_text())}
    if "puzzle" in arch:
        summary["puzzle"] = arch["puzzle"]
    summary["eval"] = _eval_data(cfg, inp.eval_rows)

    exp = {"dtype": cfg.export_dtype, "model_type": cfg.export_model_type}
    if cfg.export_per_layer_mlp:
        exp["per_layer_mlp"] = True
    _, action = cache.enter("export", "export", {"distillation": key, "export": exp})
    if action == "run":
        hf_dir = out / "hf"
        try:
            export(final_dir, hf_dir, dtype=cfg.export_dtype, model_type=cfg.export_model_type,
                   per_layer_mlp=cfg.export_per_layer_mlp)  # fmt: skip
            result = str(hf_dir)
        except UserError as e:  # e.g. per-layer widths: the native student stays the output
            result = f"skipped: {e}"
        cache.finish("export", result=result)
    summary["export"] = cache.get("export")["result"]
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2))
    _write_report(out, summary)
    return summary


def _puzzle_stage(cfg: CompressConfig, inp: _Inputs, teacher, scores: dict, log) -> dict:
    """Full-mode Puzzle on the calibration rows (ranked on the eval rows): writes
    ``OUT/puzzle`` (its report and the chosen student); returns ``arch.json``."""
    from jaxprune.puzzle.full import choices, run_puzzle
    from jaxprune.puzzle.full_report import write_full_report

    out, pz, src = Path(cfg.out), cfg.puzzle, inp.src
    result = run_puzzle(teacher, scores, inp.calib_rows, inp.eval_rows, pz,
                        cache_dir=out / "puzzle_cache", batch_size=cfg.calibration.batch_size,
                        log=log)  # fmt: skip
    picked = choices(teacher.config, result)
    data = {"data": cfg.data, "rows": min(pz.score_samples, len(inp.calib_rows)),
            "eval_rows": min(pz.eval_samples, len(inp.eval_rows)),
            "seq_len": int(inp.calib_rows.shape[1])}  # fmt: skip
    with atomic_output_dir(out / "puzzle") as tmp:
        write_full_report(tmp, result, picked, parent_params=count_params(teacher.config)["total"],
                          budget=pz.budget_text(), data=data, distilled=bool(pz.distill_steps),
                          bld_steps=pz.bld_steps)  # fmt: skip
        save_native(tmp / "student", result.student, family=src.family,
                    hf_config=src.hf_config, aux_dir=src.source)  # fmt: skip
    variants = {str(b["block"]): b["variant"] for b in picked["blocks"]}
    return {"targets": {}, "puzzle": variants, "costs": picked["costs"]}


def _dmc_stage(cfg: CompressConfig, inp: _Inputs, cache: StageCache, key: str, student):
    """The DMC retrofit of the distilled ``student`` (resumable): (its key, the model)."""
    from jaxprune.dmc.run import retrofit_dmc

    tc = cfg.dmc_train_config
    inputs = {"distillation": key, "data": inp.data_fp, "dmc": cfg.dmc,
              "dmc train": _train_settings(tc)}  # fmt: skip
    key, action = cache.enter("dmc", "DMC retrofit", inputs, resumable=True)
    if action != "reuse":
        src = inp.src
        retrofit_dmc(student, train_source=inp.corpus, out=Path(cfg.out) / "dmc", train=tc,
                     dmc=cfg.dmc, resume=action == "resume", family=src.family,
                     hf_config=src.hf_config, aux_dir=src.source)  # fmt: skip
        cache.finish("dmc")
    return key, load_native(Path(cfg.out) / "dmc")[0]


def _teacher_stage(cfg: CompressConfig, inp: _Inputs, cache: StageCache):
    """Teacher correction (resumable): returns (its key, the corrected teacher)."""
    out = Path(cfg.out)
    inputs = {
        "model": inp.model_fp,
        "data": inp.data_fp,
        "teacher correction": _train_settings(cfg.teacher_correction),
    }
    key, action = cache.enter("teacher correction", "teacher correction", inputs, resumable=True)
    if action != "reuse":
        run_dir = out / "teacher_run"
        _train(cfg.teacher_correction, inp.src.model, None, inp.corpus, run_dir, inp.src,
               action == "resume")  # fmt: skip
        with atomic_output_dir(out / "teacher") as tmp:
            shutil.copytree(run_dir, tmp, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("checkpoints"))  # fmt: skip
        cache.finish("teacher correction")
    return key, load_native(out / "teacher")[0]


def _train_settings(tc: TrainConfig) -> dict:
    """The TrainConfig fields that change the result (not logging / checkpoint cadence)."""
    from jaxprune.train.config import RESUMABLE_CHANGES

    return {k: v for k, v in tc.to_dict().items() if k not in RESUMABLE_CHANGES}


def _eval_row(name: str, model, rows, batch_size: int, evaluate) -> dict:
    ev = evaluate(model, rows, batch_size=batch_size)
    c = count_params(model.config)
    return {
        "model": name,
        "params": c["total"],
        "active": c["active"],
        "loss": ev["loss"],
        "ppl": ev["ppl"],
        "tokens": ev["tokens"],
    }


def _train(
    cfg: TrainConfig, student, teacher, corpus, out: Path, src: LoadedModel, resume: bool
) -> None:
    from jaxprune.train import run

    run(
        cfg,
        student=student,
        teacher=teacher,
        train_source=corpus,
        out=out,
        resume=resume,
        family=src.family,
        hf_config=src.hf_config,
        aux_dir=src.source,
    )


def _eval_data(cfg: CompressConfig, rows) -> dict:
    """What the eval losses were measured on, and whether that is the training data."""
    path = cfg.eval_data or cfg.data
    same = cfg.eval_data is None or Path(cfg.eval_data).resolve() == Path(cfg.data).resolve()
    n, t = rows.shape
    return {"data": str(path), "rows": int(n), "seq_len": int(t), "training_data": same}


def _write_report(out: Path, summary: dict) -> None:
    from jaxprune.pipeline.report import report_lines

    lines = report_lines(summary)
    if _plot(out / "report.png", summary):
        lines += ["", "![loss and parameters](report.png)"]
    if (out / "search" / "report.md").is_file():
        lines += ["", "Search: see [search/report.md](search/report.md)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _plot(path: Path, summary: dict) -> bool:
    """Loss and parameters per stage (skipped without matplotlib); see
    :func:`jaxprune.pipeline.report.plot`."""
    from jaxprune.pipeline.report import plot

    return plot(path, summary)


def _jsonable(cfg: CompressConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
