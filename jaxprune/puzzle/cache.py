"""Puzzle's resumable cache: the library's scores, BLD weights and rescoring, latencies.

Each entry is a file under the cache directory, written atomically, next to the key of
what it was computed from (the parent's weights, the importance scores, the scoring rows
and the settings that matter to that entry). A rerun reuses an entry whose key matches and
recomputes (saying so) one whose key changed; a new budget or top-k reuses everything.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.atomic import atomic_write_bytes, atomic_write_text
from jaxprune.digest import array_digest, digest

# the settings each entry depends on (besides weights, scores and rows)
_DEPENDS = {
    "scores": ("library", "score_metric"),
    "bld": ("library", "bld_steps", "bld_lr"),
    "bld_scores": ("library", "score_metric", "bld_steps", "bld_lr"),
    "latency": ("library", "latency_context"),
}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class Store:
    """``get(name, compute)`` for list-of-arrays entries; ``get_bld`` / ``get_latency``.
    With ``root`` None nothing is cached."""

    def __init__(self, root: Path | None, parent, scores: dict, rows, cfg, log: Callable):
        self.root = None if root is None else Path(root)
        self.log = log
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        settings = {k: getattr(cfg, k) for names in _DEPENDS.values() for k in names
                    if k != "library"}  # fmt: skip
        settings["library"] = cfg.library()
        base = {
            "weights": array_digest(jax.tree.leaves(nnx.state(parent))),
            "scores": array_digest([scores[k] for k in sorted(scores)]),
            "rows": array_digest([rows]),
            "config": parent.config.to_dict(),
        }
        self.keys = {
            name: digest({**base, **{k: settings[k] for k in names}})
            for name, names in _DEPENDS.items()
        }

    def _cached(self, name: str) -> Path | None:
        if self.root is None:
            return None
        key_file = self.root / f"{name}.key"
        data = self.root / f"{name}.npz"
        if data.exists() and key_file.exists():
            if key_file.read_text().strip() == self.keys[name]:
                self.log(f"puzzle: cached {name} ({self.root})")
                return data
            self.log(f"puzzle: {name} inputs changed, recomputing")
        return None

    def _save(self, name: str, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
        if self.root is None:
            return
        arrays = dict(arrays)
        if meta is not None:
            arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        atomic_write_bytes(self.root / f"{name}.npz", _npz(arrays))
        atomic_write_text(self.root / f"{name}.key", self.keys[name])

    def get(self, name: str, compute: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        path = self._cached(name)
        if path is not None:
            with np.load(path, allow_pickle=False) as z:
                return [z[f"b{i}"] for i in range(len([k for k in z.files if k[0] == "b"]))]
        out = compute()
        self._save(name, {f"b{i}": np.asarray(a) for i, a in enumerate(out)})
        return out

    def get_latency(self, compute: Callable) -> tuple[list[np.ndarray], float]:
        path = self._cached("latency")
        if path is not None:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["__meta__"].tobytes())
                return [z[f"b{i}"] for i in range(meta["blocks"])], meta["shared"]
        costs, shared = compute()
        self._save("latency", {f"b{i}": a for i, a in enumerate(costs)},
                   {"blocks": len(costs), "shared": shared})  # fmt: skip
        return costs, shared

    def get_bld(self, parent, library, compute: Callable) -> tuple[dict, dict]:
        """(trained block params, final local losses) of :func:`block_distill`."""
        path = self._cached("bld")
        if path is not None:
            trained, losses = {}, {}
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["__meta__"].tobytes())
                for i, idx in meta["idx"].items():
                    i = int(i)
                    template = nnx.split(parent.blocks[i])[1]
                    n = len(jax.tree.leaves(template))
                    leaves = [jnp.asarray(z[f"p{i}_{j}"]) for j in range(n)]
                    stacked = jax.tree.unflatten(jax.tree.structure(template), leaves)
                    trained[i] = (list(idx), stacked)
                    losses[i] = z[f"loss{i}"]
            return trained, losses
        trained, losses = compute()
        arrays = {}
        for i, (_, stacked) in trained.items():
            for j, leaf in enumerate(jax.tree.leaves(stacked)):
                arrays[f"p{i}_{j}"] = np.asarray(leaf)
            arrays[f"loss{i}"] = np.asarray(losses[i])
        self._save("bld", arrays, {"idx": {str(i): idx for i, (idx, _) in trained.items()}})
        return trained, losses
