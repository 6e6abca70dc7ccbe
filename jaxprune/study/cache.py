"""Every run of the study cached under ``OUT/runs/<kind>/<key>/`` (key: a digest of the
run's inputs), finished when its ``result.json`` exists; ``OUT/work.log`` gets one line
per run: ``computed`` when it ran, ``cached`` when a finished result was reused,
``recomputed`` when a finished run's artifact (a model, say) was needed but is gone: only
the small results of a study are meant to be kept (committed), its models are rebuilt."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.digest import array_digest

__all__ = ["RunCache", "array_digest", "digest"]


def digest(inputs: dict) -> str:
    """A stable 12-hex key of JSON-able ``inputs``."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]


class RunCache:
    """Run directories and results under ``root``; ``log`` counts what ran this session."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "work.log"
        self.computed: list[str] = []

    def dir(self, kind: str, inputs: dict) -> Path:
        return self.root / "runs" / kind / digest(inputs)

    def _log(self, what: str, kind: str, path: Path) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {what} {kind} {path.name}\n")

    def get(
        self, kind: str, inputs: dict, compute: Callable[[Path], dict], need: tuple = ()
    ) -> dict:
        """The cached result of run ``kind`` with ``inputs``, else ``compute(run_dir)``'s
        (saved with the inputs, atomically, so an interrupted run is redone or resumed).
        ``need``: files or folders of the run directory the caller reads; a finished run
        missing one is recomputed. A result's ``digest`` entry (of its weights, say) must
        come out the same when recomputed, else the cached results downstream of it would
        describe another run: that is an error."""
        d = self.dir(kind, inputs)
        done = d / "result.json"
        old = json.loads(done.read_text())["result"] if done.is_file() else None
        if old is not None and all((d / n).exists() for n in need):
            self._log("cached", kind, d)
            return old
        d.mkdir(parents=True, exist_ok=True)
        result = compute(d)
        if old is not None and "digest" in old and old["digest"] != result.get("digest"):
            self._log("differs", kind, d)
            raise RuntimeError(
                f"{kind} run {d} recomputed with digest {result.get('digest')}, the cached "
                f"one was {old.get('digest')}: the computation is not reproducible here, so "
                "the cached results that depend on it cannot be mixed with new ones"
            )
        atomic_write_text(done, json.dumps({"inputs": inputs, "result": result}, indent=1))
        self.computed.append(f"{kind}/{d.name}")
        self._log("recomputed" if old is not None else "computed", kind, d)
        return result
