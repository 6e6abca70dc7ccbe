"""The high-level Python API: :func:`compress`, the ``jaxprune compress`` command as one call.

:func:`compress` takes a model (a path, a preset name, a :class:`~jaxprune.models.LoadedModel`
or a :class:`~jaxprune.nn.model.HybridLM`) and data (a path, an int array of token ids
``(n, T)``, or a list of strings with a tokenizer), runs
:func:`jaxprune.pipeline.run_compress` (the same checks, stages and report as the command)
and returns a :class:`CompressResult` with the pruned and distilled models in memory.
Without ``out=`` nothing is left on disk (the run works in a temporary directory).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxprune.errors import UserError

if TYPE_CHECKING:
    from jaxprune.data import Corpus
    from jaxprune.nn.model import HybridLM
    from jaxprune.pipeline import CompressConfig

#: CompressConfig fields a dict may give for a nested config (``distill={"steps": 50}``).
_NESTED = ("calibration", "search", "distill", "teacher_correction")


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress` made: ``pruned`` (before distillation) and ``student`` (after),
    both in memory; ``report`` the summary of ``report.json`` (targets, the eval rows of
    teacher / pruned / distilled, export); ``out`` the run directory (None without
    ``out=``)."""

    pruned: HybridLM
    student: HybridLM
    report: dict
    out: Path | None

    @property
    def targets(self) -> dict:
        """The targets the student was pruned to (given, or chosen by the search)."""
        return self.report["targets"]

    @property
    def rows(self) -> list[dict]:
        """Eval rows: ``{"model", "params", "active", "loss", "ppl", "tokens"}`` each."""
        return self.report["rows"]


def compress(
    model: Any,
    data: Any,
    *,
    targets: dict | None = None,
    out: str | Path | None = None,
    eval_data: Any = None,
    tokenizer: Any = None,
    log=print,
    **options: Any,
) -> CompressResult:
    """Prune ``model`` to ``targets`` (or a ``search=`` budget) and distill it on ``data``.

    ``model``: a path (HF, PyTorch or native directory; a config JSON), a preset name, a
    ``LoadedModel`` or a ``HybridLM``. ``data`` / ``eval_data``: a path (any format of
    :mod:`jaxprune.data.sources`), an int array ``(n, T)`` of token ids (each row one
    document; also the calibration / eval rows as given), or a list of strings, tokenized
    with ``tokenizer`` (default: the model's) with EOS after each. ``options``: the other
    :class:`~jaxprune.pipeline.CompressConfig` fields; a nested config may be a dict
    (``distill={"steps": 50}``, ``calibration={"samples": 64}``,
    ``search={"params": 0.5}``). With ``out``, the stages are cached there exactly as the
    command caches them (in-memory inputs are written to a temporary file per call, so a
    rerun recomputes every stage; a model object is saved there too, as the pipeline reads
    its model from disk). Bad input raises :class:`~jaxprune.errors.UserError`
    before any work.
    """
    with tempfile.TemporaryDirectory(prefix="jaxprune-") as tmp:
        work = Path(tmp)
        text = _is_text(data) or _is_text(eval_data)
        spec, tok = _model_spec(model, work, tokenizer, needs_tokenizer=text)
        fields = {
            "model": spec,
            "data": _data_path(data, work, "data", tok),
            "out": str(out) if out is not None else str(work / "run"),
            "eval_data": None if eval_data is None else _data_path(eval_data, work, "eval", tok),
            "targets": dict(targets or {}),
            **_options(options),
        }
        cfg = _config(fields)
        from jaxprune.converters.native import load_native
        from jaxprune.pipeline import run_compress

        report = run_compress(cfg, log=log)
        run = Path(cfg.out)
        pruned, _ = load_native(run / "pruned")
        student, _ = load_native(run / "student")
        if out is None:
            report = {**report, "export": "not kept (no out= given)"}
        return CompressResult(pruned, student, report, None if out is None else run)


def as_corpus(data: Any, *, tokenizer: Any = None) -> Corpus:
    """In-memory data -> a :class:`~jaxprune.data.Corpus` for :func:`jaxprune.distill`: int
    token ids ``(n, T)`` (each row one document) or 1-D (one document), or a list of strings
    (each tokenized with ``tokenizer`` and followed by its EOS, one document each)."""
    from jaxprune.data import Corpus
    from jaxprune.tokenizer import as_tokenizer

    if _is_text(data):
        tok = as_tokenizer(tokenizer)
        if tok is None:
            raise UserError("data: a list of strings needs a tokenizer=")
        docs = [_encode(tok, s) for s in data]
        docs = [d for d in docs if len(d)]
        starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
        return Corpus([np.concatenate(docs).astype(np.int32)], starts)
    arr = _token_ids(data, "data")
    if arr.ndim == 1:
        return Corpus([arr], np.zeros(1, np.int64))
    return Corpus([arr.reshape(-1)], np.arange(len(arr), dtype=np.int64) * arr.shape[1])


def _encode(tok, text: str) -> np.ndarray:
    eos = tok.eos_id
    return np.asarray(tok.encode(text) + ([] if eos is None else [eos]), np.int32)


def _token_ids(data: Any, name: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2) or arr.size == 0:
        raise UserError(
            f"{name} must be a path, int token ids (n, T) or a list of strings, "
            f"got a {arr.dtype} array of shape {arr.shape}"
        )
    return arr.astype(np.int32)


def _config(fields: dict) -> CompressConfig:
    from jaxprune.pipeline import CompressConfig

    known = {f.name for f in dataclasses.fields(CompressConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UserError(
            f"compress: unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}"
        )
    return CompressConfig(**fields)


def _options(options: dict) -> dict:
    """Nested configs given as dicts -> their dataclasses."""
    from jaxprune.pruning.scoring import ScoreConfig
    from jaxprune.search.run import SearchConfig
    from jaxprune.train import TrainConfig

    kinds = {
        "calibration": ScoreConfig,
        "search": SearchConfig,
        "distill": TrainConfig,
        "teacher_correction": TrainConfig,
    }
    out = dict(options)
    for name in _NESTED:
        v = out.get(name)
        if isinstance(v, dict):
            out[name] = _build(kinds[name], name, v)
    return out


def _build(cls, name: str, values: dict):
    """``cls`` from a dict, an unknown field a one-line UserError."""
    known = [f.name for f in dataclasses.fields(cls)]
    bad = sorted(set(values) - set(known))
    if bad:
        raise UserError(f"compress: {name}: unknown field {bad[0]!r}; known: {', '.join(known)}")
    return cls.from_dict(values) if hasattr(cls, "from_dict") else cls(**values)


def _is_text(data: Any) -> bool:
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(s, str) for s in data)


def _model_spec(model: Any, work: Path, tokenizer: Any, *, needs_tokenizer: bool):
    """(a spec run_compress can resolve, the tokenizer for text data or None)."""
    from jaxprune.converters.native import save_native
    from jaxprune.models import LoadedModel
    from jaxprune.nn.model import HybridLM
    from jaxprune.tokenizer import as_tokenizer, load_tokenizer

    tok = None
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        tok = as_tokenizer(tok)
    if isinstance(model, LoadedModel):
        spec = save_native(
            work / "model", model.model, family=model.family, hf_config=model.hf_config,
            aux_dir=model.source,
        )  # fmt: skip
        tok = tok or model.tokenizer
    elif isinstance(model, HybridLM):
        spec = save_native(work / "model", model)
    elif isinstance(model, (str, Path)):
        spec = model
        if needs_tokenizer and tok is None:
            from jaxprune.models import resolve_model

            tok = resolve_model(model).tokenizer
    else:
        raise UserError(
            "compress: model must be a path, a preset name, a LoadedModel or a HybridLM, got "
            f"{type(model).__name__}"
        )
    if needs_tokenizer and tok is None:
        raise UserError("compress: text data needs a tokenizer (the model has none): tokenizer=")
    return str(spec), tok


def _data_path(data: Any, work: Path, name: str, tok) -> str:
    """A path as given; token ids or strings written to ``work/in-memory-<name>.npy``."""
    if isinstance(data, (str, Path)):
        return str(data)
    if _is_text(data):
        arr = np.concatenate([_encode(tok, s) for s in data])
    else:
        arr = _token_ids(data, f"compress: {name}")
    path = work / f"in-memory-{name}.npy"  # the report names it so
    np.save(path, arr)
    return str(path)
