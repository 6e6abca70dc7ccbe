"""``jaxprune compress``: load -> (teacher correction) -> importance -> search or fixed targets
-> prune -> distill -> evaluate -> export, every stage cached under OUT and resumable.

Each stage calls the same library function as the separate command (:func:`score_with` as
``importance``, :func:`search_with` as ``search``, :func:`~jaxprune.pruning.prune.prune` as
``prune``, :func:`~jaxprune.train.run` as ``distill``, :func:`evaluate_lm_loss` as ``eval``,
:func:`~jaxprune.converters.api.export` as ``export``), writes its output (a native
checkpoint, a scores file, a JSON) and is skipped when that output exists, so an interrupted
run continues where it stopped; the distillation stage resumes from its own orbax
checkpoints. gin binds :class:`CompressConfig` (and the dataclasses it nests) in the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jaxprune.converters.api import export
from jaxprune.converters.native import is_native, load_native, save_native
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.pruning.scoring import ScoreConfig, Scores, score_with
from jaxprune.search.run import SearchConfig, search_with
from jaxprune.train import TrainConfig

if TYPE_CHECKING:
    from jaxprune.models import LoadedModel


@dataclass(frozen=True)
class CompressConfig:
    """One compression run. ``targets`` (HF config names) or ``search`` (a budgeted
    architecture search) decide the student architecture; ``calibration`` says how
    importance is estimated (aggregation, depth ranking, samples), exactly as the
    ``importance`` command's flags do."""

    model: str
    data: str
    out: str
    eval_data: str | None = None
    targets: dict = field(default_factory=dict)
    search: SearchConfig | None = None
    calibration: ScoreConfig = field(default_factory=ScoreConfig)
    eval_rows: int = 256
    text_suffixes: tuple[str, ...] = (".txt",)
    teacher_correction: TrainConfig | None = None
    distill: TrainConfig = field(default_factory=TrainConfig)
    export_dtype: str = "bf16"
    export_model_type: str | None = None

    def __post_init__(self):
        if bool(self.targets) == (self.search is not None):
            raise UserError("compress: give exactly one of targets or search (a budget)")
        if self.eval_rows < 1:
            raise UserError(f"compress: eval_rows must be >= 1, got {self.eval_rows}")


def run_compress(cfg: CompressConfig, log=print) -> dict:
    """Run (or resume) every stage; returns the summary written to OUT/report.json."""
    from jaxprune.data import load_corpus, load_rows
    from jaxprune.evaluation import evaluate_lm_loss
    from jaxprune.models import resolve_model
    from jaxprune.pruning.prune import prune

    out = Path(cfg.out)
    src = resolve_model(cfg.model)
    teacher, tok, vocab = src.model, src.tokenizer, src.config.vocab_size
    out.mkdir(parents=True, exist_ok=True)
    (out / "compress_config.json").write_text(json.dumps(_jsonable(cfg), indent=2))
    corpus = load_corpus(cfg.data, tokenizer=tok, vocab_size=vocab, text_suffixes=cfg.text_suffixes)

    def rows(path: str, seq_len: int, n: int):
        return load_rows(path, seq_len=seq_len, tokenizer=tok, max_rows=n, vocab_size=vocab)

    if cfg.teacher_correction is not None:
        done = out / "teacher"
        if not is_native(done):
            log("stage: teacher correction")
            _train(cfg.teacher_correction, teacher, None, corpus, out / "teacher_run", src)
            shutil.copytree(out / "teacher_run", done, ignore=shutil.ignore_patterns("checkpoints"))
        teacher, _ = load_native(done)

    scores_path = out / "scores.npz"
    calib = cfg.calibration
    if not scores_path.is_file():
        log("stage: importance")
        sc = score_with(
            teacher,
            rows(cfg.data, calib.seq_len, calib.samples),
            calib,
            progress=True,
            meta={"model": str(cfg.model), "data": cfg.data},
        )
        sc.save(scores_path, teacher.config)
    scores = Scores.load(scores_path, teacher.config)
    depth = scores.depth(calib.depth_method)

    eval_rows = rows(cfg.eval_data or cfg.data, cfg.distill.seq_len, cfg.eval_rows)
    arch_path = out / "arch.json"
    if not arch_path.is_file():
        targets = dict(cfg.targets)
        if cfg.search is not None:
            log("stage: architecture search")
            result = search_with(
                teacher, scores.scores, eval_rows, cfg.search,
                batch_size=calib.batch_size, depth=depth,
            )  # fmt: skip
            result.write(out / "search")
            targets = result.best.targets
        arch_path.write_text(json.dumps({"targets": targets}, indent=2))
    targets = json.loads(arch_path.read_text())["targets"]

    pruned_dir = out / "pruned"
    if not is_native(pruned_dir):
        log(f"stage: prune to {targets}")
        save_native(
            pruned_dir,
            prune(teacher, scores.scores, targets, depth),
            family=src.family,
            hf_config=src.hf_config,
            aux_dir=src.source,
        )
    pruned, _ = load_native(pruned_dir)

    student_dir = out / "student"
    if not is_native(student_dir):
        log("stage: distillation")
        _train(cfg.distill, pruned, teacher, corpus, student_dir, src)
    student, _ = load_native(student_dir)

    summary_path = out / "report.json"
    if not summary_path.is_file():
        log("stage: evaluation")
        table = []
        for name, m in (("teacher", teacher), ("pruned", pruned), ("distilled", student)):
            ev = evaluate_lm_loss(m, eval_rows, batch_size=calib.batch_size)
            c = count_params(m.config)
            table.append(
                {
                    "model": name,
                    "params": c["total"],
                    "active": c["active"],
                    "loss": ev["loss"],
                    "ppl": ev["ppl"],
                    "tokens": ev["tokens"],
                }
            )
        summary_path.write_text(json.dumps({"targets": targets, "rows": table}, indent=2))
    summary = json.loads(summary_path.read_text())

    hf_dir = out / "hf"
    if not hf_dir.exists():
        log("stage: export")
        try:
            export(student_dir, hf_dir, dtype=cfg.export_dtype, model_type=cfg.export_model_type)
            summary["export"] = str(hf_dir)
        except UserError as e:  # e.g. per-layer widths: the native student stays the output
            summary["export"] = f"skipped: {e}"
    else:
        summary["export"] = str(hf_dir)
    _write_report(out, summary)
    return summary


def _train(cfg: TrainConfig, student, teacher, corpus, out: Path, src: LoadedModel) -> None:
    from jaxprune.train import run

    run(
        cfg,
        student=student,
        teacher=teacher,
        train_source=corpus,
        out=out,
        resume=out.exists(),
        family=src.family,
        hf_config=src.hf_config,
        aux_dir=src.source,
    )
def _write_report(out: Path, summary: dict) -> None:
    lines = [
        "# Compression report",
        "",
        f"Targets: `{summary['targets']}`",
        "",
        "| model | params | active | eval loss | ppl |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['params']:,} | {r['active']:,} | {r['loss']:.4f} | {r['ppl']:.2f} |"
        for r in summary["rows"]
    ]
    if "export" in summary:
        lines += ["", f"HF export: {summary['export']}"]
    if _plot(out / "report.png", summary["rows"]):
        lines += ["", "![loss and parameters](report.png)"]
    if (out / "search" / "report.md").is_file():
        lines += ["", "Search: see [search/report.md](search/report.md)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _plot(path: Path, rows: list[dict]) -> bool:
    """Bar charts of held-out loss and parameters per stage (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [r["model"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.bar(names, [r["loss"] for r in rows], color="tab:blue")
    a.set_ylabel("held-out loss (nats)")
    b.bar(names, [r["params"] / 1e6 for r in rows], color="tab:gray")
    b.set_ylabel("parameters (M)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _jsonable(cfg: CompressConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
