"""``jaxprune compress``: load -> (teacher correction) -> importance -> search or fixed targets
-> prune -> distill -> evaluate -> export, every stage cached under OUT and resumable.

Each stage writes its output (a native checkpoint, a scores file, a JSON) and is skipped
when that output exists, so an interrupted run continues where it stopped; the distillation
stage resumes from its own orbax checkpoints. The library part is this module; gin binds
:class:`CompressConfig` (and the trainer's dataclasses) in the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxprune.converters.api import export, load_model, model_tokenizer
from jaxprune.converters.fsutil import atomic_output_dir, copy_aux_files
from jaxprune.converters.native import is_native, load_native, save_model
from jaxprune.counts import count_params
from jaxprune.train import TrainConfig


@dataclass(frozen=True)
class CompressConfig:
    """One compression run. ``targets`` (HF config names) or ``params_budget`` (search: <= 1
    is a fraction of the source's parameters) decide the student architecture."""

    model: str
    data: str
    out: str
    eval_data: str | None = None
    targets: dict = field(default_factory=dict)
    params_budget: float | None = None
    search_top_k: int = 5
    search_divisor: int = 64
    calib_samples: int = 1024
    calib_seq_len: int = 512
    calib_batch_size: int = 8
    eval_rows: int = 256
    text_suffixes: tuple[str, ...] = (".txt",)
    teacher_correction: TrainConfig | None = None
    distill: TrainConfig = field(default_factory=TrainConfig)
    export_dtype: str = "bf16"
    export_model_type: str | None = None

    def __post_init__(self):
        if bool(self.targets) == (self.params_budget is not None):
            raise ValueError("compress: give exactly one of targets or params_budget")


def _corpus(cfg: CompressConfig, path: str, tok, vocab: int):
    from jaxprune.data import load_corpus

    return load_corpus(path, tokenizer=tok, vocab_size=vocab, text_suffixes=cfg.text_suffixes)


def _rows(corpus, seq_len: int, n: int) -> np.ndarray:
    from jaxprune.data import make_eval_batches

    batches = make_eval_batches(corpus, seq_len=seq_len, batch_size=1, max_rows=n)
    return np.concatenate([b["tokens"] for b in batches])


def _stage(out: Path, name: str) -> Path:
    return out / name


def run_compress(cfg: CompressConfig, log=print) -> dict:
    """Run (or resume) every stage; returns the summary written to OUT/report.json."""
    from jaxprune.evaluation import evaluate_lm_loss
    from jaxprune.pruning.importance import calibrate, scores
    from jaxprune.pruning.prune import prune
    from jaxprune.pruning.scores_io import load_scores, save_scores
    from jaxprune.train import run

    out, src = Path(cfg.out), Path(cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compress_config.json").write_text(json.dumps(_jsonable(cfg), indent=2))
    teacher, meta = load_model(src)
    family, hf_config = meta.get("family"), meta.get("hf_config")
    tok = model_tokenizer(src)
    vocab = teacher.config.vocab_size
    corpus = _corpus(cfg, cfg.data, tok, vocab)

    if cfg.teacher_correction is not None:
        done = _stage(out, "teacher")
        if not is_native(done):
            log("stage: teacher correction")
            run(
                cfg.teacher_correction,
                student=teacher,
                train_source=corpus,
                out=out / "teacher_run",
                resume=(out / "teacher_run").exists(),
                family=family,
                hf_config=hf_config,
                aux_dir=src,
            )
            shutil.copytree(out / "teacher_run", done, ignore=shutil.ignore_patterns("checkpoints"))
        teacher, _ = load_native(done)

    scores_path = _stage(out, "scores.npz")
    if not scores_path.is_file():
        log("stage: importance")
        calib = _rows(corpus, cfg.calib_seq_len, cfg.calib_samples)
        bs = cfg.calib_batch_size
        stats = calibrate(
            teacher, [calib[i : i + bs] for i in range(0, len(calib), bs)], progress=True
        )
        save_scores(
            scores_path,
            scores(stats, teacher),
            stats,
            {
                "model": str(src),
                "data": cfg.data,
                "samples": int(len(calib)),
                "seq_len": cfg.calib_seq_len,
                "aggregation": "l2",
            },
            teacher.config,
        )
    sc, _ = load_scores(scores_path, teacher.config)

    eval_corpus = _corpus(cfg, cfg.eval_data, tok, vocab) if cfg.eval_data else corpus
    eval_rows = _rows(eval_corpus, cfg.distill.seq_len, cfg.eval_rows)
    arch_path = _stage(out, "arch.json")
    if not arch_path.is_file():
        targets = dict(cfg.targets)
        if cfg.params_budget is not None:
            log("stage: architecture search")
            targets = _search(cfg, teacher, sc, eval_rows, out / "search")
        arch_path.write_text(json.dumps({"targets": targets}, indent=2))
    targets = json.loads(arch_path.read_text())["targets"]

    pruned_dir = _stage(out, "pruned")
    if not is_native(pruned_dir):
        log(f"stage: prune to {targets}")
        with atomic_output_dir(pruned_dir) as tmp:
            save_model(tmp, prune(teacher, sc, targets), family=family, hf_config=hf_config)
            copy_aux_files(src, tmp)
    pruned, _ = load_native(pruned_dir)

    student_dir = _stage(out, "student")
    if not is_native(student_dir):
        log("stage: distillation")
        run(
            cfg.distill,
            student=pruned,
            teacher=teacher,
            train_source=corpus,
            out=student_dir,
            resume=student_dir.exists(),
            family=family,
            hf_config=hf_config,
            aux_dir=src,
        )
    student, _ = load_native(student_dir)

    summary_path = _stage(out, "report.json")
    if not summary_path.is_file():
        log("stage: evaluation")
        rows = []
        for name, m in (("teacher", teacher), ("pruned", pruned), ("distilled", student)):
            ev = evaluate_lm_loss(m, eval_rows, batch_size=cfg.calib_batch_size)
            c = count_params(m.config)
            rows.append(
                {
                    "model": name,
                    "params": c["total"],
                    "active": c["active"],
                    "loss": ev["loss"],
                    "ppl": ev["ppl"],
                    "tokens": ev["tokens"],
                }
            )
        summary_path.write_text(json.dumps({"targets": targets, "rows": rows}, indent=2))
    summary = json.loads(summary_path.read_text())

    hf_dir = _stage(out, "hf")
    if not hf_dir.exists():
        log("stage: export")
        try:
            export(student_dir, hf_dir, dtype=cfg.export_dtype, model_type=cfg.export_model_type)
            summary["export"] = str(hf_dir)
        except ValueError as e:  # e.g. per-layer widths: the native student stays the output
            summary["export"] = f"skipped: {e}"
    _write_report(out, summary)
    return summary


def _search(cfg: CompressConfig, teacher, sc, rows, out: Path) -> dict:
    from jaxprune.counts import count_params as cp
    from jaxprune.search.report import write_report
    from jaxprune.search.search import Budget, evaluate, shortlist
    from jaxprune.search.space import SearchSpace

    cands = shortlist(
        teacher,
        sc,
        Budget(params=cfg.params_budget),
        SearchSpace(divisor=cfg.search_divisor),
        cfg.search_top_k,
    )
    cands = evaluate(teacher, sc, cands, rows)
    best = min(cands, key=lambda c: c.final_loss)
    write_report(out, cands, best, cp(teacher.config))
    return best.targets


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
