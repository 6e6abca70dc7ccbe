"""Saving and loading calibration scores with the model and data they came from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from jaxprune.atomic import atomic_file
from jaxprune.config import ModelConfig
from jaxprune.errors import UserError


def config_digest(cfg: ModelConfig) -> str:
    """Digest of the architecture (implementation choices such as ``ssd_impl`` excluded, so
    scores stay valid when only the kernel changes)."""
    text = json.dumps(cfg.architecture_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_scores(path: str | Path, scores: dict, stats: dict, meta: dict, cfg: ModelConfig) -> Path:
    """One ``.npz``: ``score/<name>`` and ``stat/<name>`` arrays plus a JSON ``meta``
    (model path and config digest, data path, samples, seq_len, aggregation)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    meta = {**meta, "config_digest": config_digest(cfg), "model_config": cfg.to_dict()}
    arrays = {f"score/{k}": np.asarray(v) for k, v in scores.items()}
    arrays |= {f"stat/{k}": np.asarray(v) for k, v in stats.items()}
    with atomic_file(path) as tmp:
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_scores(path: str | Path, cfg: ModelConfig | None = None) -> tuple[dict, dict]:
    """(scores, meta); with ``cfg``, refuse scores computed on a different architecture."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"scores file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            scores = {k[6:]: z[k] for k in z.files if k.startswith("score/")}
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: not a jaxprune scores file ({e})") from e
    if cfg is not None and meta.get("config_digest") != config_digest(cfg):
        raise UserError(
            f"{path}: scores were computed for a different model ({meta.get('model')}); recalibrate"
        )
    return scores, meta
