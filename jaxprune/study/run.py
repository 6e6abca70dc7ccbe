"""The whole study: data split, teacher (given or trained and cached), the five findings,
``OUT/results.json`` and ``OUT/STUDY.md`` (:mod:`jaxprune.study.report`)."""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path

import jax
from flax import nnx

from jaxprune.atomic import atomic_write_text
from jaxprune.converters.native import load_native
from jaxprune.counts import count_params
from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.small_lm import small_optim, small_train_config
from jaxprune.study import findings as F
from jaxprune.study.cache import RunCache, array_digest, digest
from jaxprune.study.config import StudyConfig
from jaxprune.study.data import Split, default_data, prepare
from jaxprune.study.report import write_report
from jaxprune.study.runs import Study, train_resumable
from jaxprune.study.stats import reproduced


def _own_teacher(cfg: StudyConfig, split: Split, tok_dir: Path | None, cache: RunCache):
    """The study's hybrid teacher trained on the training part, as (config, key, loader,
    tokens): training runs when ``loader()`` is first called and no trained copy is cached
    (a cache holding only results retrains it; its weights must then match bit for bit)."""
    tcfg = cfg.teacher()
    inputs = {
        "config": tcfg.to_dict(),
        "steps": cfg.teacher_steps,
        "batch": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "lr": cfg.lr,
        "optim": dataclasses.asdict(small_optim(cfg.lr)),
        "data": {"source": split.source, "n_train": split.n_train},
    }

    def compute(d: Path) -> dict:
        tc = small_train_config(
            cfg.teacher_steps,
            batch_size=cfg.batch_size,
            seq_len=cfg.seq_len,
            lr=cfg.lr,
            seed=0,
            distill=False,
        )
        model = train_resumable(tc, init_model(tcfg, 0), split, d / "model")
        if tok_dir is not None:
            shutil.copy(tok_dir / "tokenizer.json", d / "model" / "tokenizer.json")
        return {
            "tokens": cfg.teacher_steps * cfg.batch_size * cfg.seq_len,
            "digest": array_digest(jax.tree.leaves(nnx.state(model))),
        }

    def loader():
        cache.get("teacher", inputs, compute, need=("model/jaxprune.json",))
        return load_native(cache.dir("teacher", inputs) / "model")[0]

    tokens = cfg.teacher_steps * cfg.batch_size * cfg.seq_len
    return tcfg, digest(inputs), loader, tokens


def _teacher_and_split(cfg, out: Path, teacher: str | None, data: str | None, cache):
    path = Path(data) if data else default_data()
    if path is not None and not path.is_file():
        raise UserError(f"data: no such file {str(path)!r}")
    if teacher is None:
        split, tok_dir = prepare(
            path, out / "data", vocab_size=cfg.vocab_size, held_fraction=cfg.held_fraction
        )
        tcfg, key, loader, tokens = _own_teacher(cfg, split, tok_dir, cache)
        return tcfg, loader, key, split, {"trained_here": True, "tokens": tokens}
    from jaxprune.models import resolve_model

    lm = resolve_model(teacher)
    spec = str(Path(teacher).resolve()) if Path(teacher).exists() else teacher
    stamp = [(p.name, p.stat().st_mtime_ns) for p in sorted(Path(spec).glob("*.json"))]
    key = digest({"teacher": spec, "files": stamp})  # a rewritten checkpoint: new runs
    split, _ = prepare(
        path,
        out / "data",
        vocab_size=lm.config.vocab_size,
        tokenizer=lm.tokenizer,
        tokenizer_id=key,
        held_fraction=cfg.held_fraction,
    )
    return lm.config, lambda: lm.model, key, split, {"trained_here": False, "spec": teacher}


def open_study(
    cfg: StudyConfig, out: Path, *, teacher: str | None = None, data: str | None = None
) -> tuple[Study, dict]:
    """The study's state under ``out`` (data split, teacher given or trained and cached)
    and a record of where the teacher came from."""
    cache = RunCache(Path(out))
    tcfg, loader, key, split, tinfo = _teacher_and_split(cfg, Path(out), teacher, data, cache)
    return Study(cfg, split, tcfg, loader, key, cache), tinfo


def run_study(
    cfg: StudyConfig,
    out: Path,
    *,
    teacher: str | None = None,
    data: str | None = None,
    zero_shot_only: bool = False,
    command: str = "",
) -> dict:
    """Run (or resume) every finding; returns the results dict also written to
    ``out/results.json``."""
    out = Path(out)
    study, tinfo = open_study(cfg, out, teacher=teacher, data=data)
    tcfg, split, cache = study.teacher_config, study.split, study.cache
    distill = not zero_shot_only
    res: dict[str, dict] = {}
    va = [F.measure(study, v, distill=distill, decode=True) for v in F.variants_a(study)]
    res["a"] = F.finding("a", va, va[0]["name"], [va[1]["name"], va[2]["name"]])
    vb = [F.measure(study, v, distill=distill) for v in F.variants_b(study)]
    res["b"] = F.finding("b", vb, vb[0]["name"], [vb[1]["name"]])
    width, depth = F.width_depth(study)
    vc = [F.measure(study, v, distill=distill) for v in (width, depth)]
    res["c"] = F.finding("c", vc, vc[0]["name"], [vc[1]["name"]])
    res["d"] = _finding_d(study, vc[0], distill)
    ve = [F.measure(study, v, distill=distill) for v in F.variants_e(study)]
    res["e"] = F.finding("e", ve, "importance", ["random"])
    results = {
        "command": command,
        "config": {k: v for k, v in cfg.__dict__.items()},
        "zero_shot_only": zero_shot_only,
        "seeds": {
            "zero_shot": cfg.seeds(False),
            "distill": [] if zero_shot_only else cfg.seeds(True),
        },
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "data": {
            "source": split.source,
            "train_tokens": split.n_train,
            "held_out_tokens": int(len(split.tokens) - split.n_train),
        },
        "teacher": {
            **tinfo,
            "params": count_params(tcfg)["total"],
            "pattern": tcfg.pattern,
            "loss": study.teacher_loss(),
        },
        "findings": res,
        "computed_this_run": list(cache.computed),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    write_report(out, results, study.scores(0), tcfg)
    return results


def _finding_d(study: Study, width: dict, distill: bool) -> dict:
    base = {**width, "name": "pruned+distilled"}
    if not distill:
        return {
            "id": "d",
            "claim": F.CLAIMS["d"],
            "expected_better": base["name"],
            "compared_to": ["scratch-1x"],
            "basis": "not run",
            "reproduced": False,
            "variants": [base],
            "catch_up_multiple": None,
        }
    curve = F.scratch_curve(study, width)
    ok = reproduced(base["distilled_loss"], curve["scratch"][0]["scratch_loss"])
    return {
        "id": "d",
        "claim": F.CLAIMS["d"],
        "expected_better": base["name"],
        "compared_to": ["scratch-1x"],
        "basis": "distilled_loss vs scratch_loss",
        "reproduced": ok,
        "variants": [base, *curve["scratch"]],
        "catch_up_multiple": curve["catch_up_multiple"],
    }


def machine_info() -> dict:
    import os

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
    }
