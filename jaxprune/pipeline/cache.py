"""The stage cache of ``compress``: each stage's output is reused only while the inputs it
depends on are unchanged.

Every stage has a key, the hash of exactly what it depends on (the source model, the data
files, its own settings and the keys of the stages it consumes), recorded with a digest of
each named input in ``OUT/stages.json``. A stage is reused when its record is finished and
its key matches; otherwise it is recomputed together with every stage after it (their
records are dropped and their outputs removed first), and the log says which input
changed. An unfinished record with the same key marks a run to resume (distillation).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from jaxprune.atomic import atomic_write_text
from jaxprune.digest import digest

MANIFEST = "stages.json"


def files_digest(files: list[Path]) -> list:
    """(absolute path, size, mtime_ns) of each file: what a rewritten file changes."""
    out = []
    for f in files:
        st = Path(f).stat()
        out.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    return out


def tree_files(root: Path) -> list[Path]:
    """The files under ``root`` (hidden entries skipped), sorted."""
    return sorted(
        p
        for p in Path(root).rglob("*")
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)
    )


def model_fingerprint(spec: str, config_dict: dict) -> str:
    """The source model: its config, and for a file or directory its files' sizes and
    mtimes (a re-converted or retrained source changes them)."""
    path = Path(spec)
    files = tree_files(path) if path.is_dir() else [path] if path.is_file() else []
    return digest({"spec": str(spec), "config": config_dict, "files": files_digest(files)})


def data_fingerprint(paths, text_suffixes) -> str:
    """The data files a path (file, directory, glob or list) expands to, with size+mtime."""
    from jaxprune.data.sources import resolve_files

    return digest(
        {"files": files_digest(resolve_files(paths, text_suffixes)), "suffixes": text_suffixes}
    )


def remove(path: Path) -> None:
    """Remove a stage output: renamed aside first, so it vanishes at once, then deleted."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    aside = path.parent / f".{path.name}.stale-{secrets.token_hex(4)}"
    os.rename(path, aside)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


class StageCache:
    """The records of ``OUT/stages.json`` and the reuse / recompute decisions, in stage
    order: once a stage is recomputed, every later one is too."""

    def __init__(self, out: Path, outputs: dict[str, tuple[str, ...]], log=print):
        self.out, self.outputs, self.log = Path(out), outputs, log
        self.order = list(outputs)
        self.path = self.out / MANIFEST
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.records = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.records = {}  # a damaged manifest: everything is recomputed
        self.previous = dict(self.records)  # as the last run left them, for the log
        self.recomputed: str | None = None

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.records, indent=2))

    def get(self, name: str) -> dict:
        return self.records.get(name, {})

    def _exists(self, name: str) -> bool:
        return (self.out / self.outputs[name][0]).exists()

    def enter(self, name: str, label: str, inputs: dict, *, resumable: bool = False) -> tuple:
        """Decide stage ``name``: returns (key, action) with action ``"reuse"``,
        ``"resume"`` or ``"run"``; for ``"run"`` the stale outputs of it and every later
        stage are gone and the new record (unfinished) is written."""
        parts = {k: digest(v) for k, v in inputs.items()}
        key = digest(parts)
        rec = self.get(name)
        same = rec.get("key") == key
        if self.recomputed is None and same and rec.get("done") and self._exists(name):
            self.log(f"cached: {label}")
            return key, "reuse"
        if self.recomputed is None and same and resumable and not rec.get("done"):
            self.log(f"stage: {label} (resuming the unfinished run)")
            self.drop(self.order[self.order.index(name) + 1 :])
            self.recomputed = name
            return key, "resume"
        reason = self._reason(self.previous.get(name, {}), parts, same)
        self.log(f"stage: {label}" + (f" (recomputed: {reason})" if reason else ""))
        self.drop(self.order[self.order.index(name) :])
        self.records[name] = {"key": key, "inputs": parts, "done": False}
        self._save()
        self.recomputed = name
        return key, "run"

    def _reason(self, rec: dict, parts: dict, same: bool) -> str | None:
        """Why a stage that the last run recorded is computed again (None: it had none)."""
        if self.recomputed is not None and rec:
            return f"{self.recomputed} was recomputed"
        if not rec:
            return None
        if not same:
            old = rec.get("inputs", {})
            changed = [k for k in parts if old.get(k) != parts[k]]
            return f"{', '.join(changed) or 'its inputs'} changed"
        if not rec.get("done"):
            return "the previous run did not finish it"
        return "its output is missing"

    def drop(self, names: list[str]) -> None:
        """Drop the records of ``names`` (saved first), then remove their outputs."""
        dropped = [n for n in names if n in self.records]
        for n in dropped:
            del self.records[n]
        if dropped:
            self._save()
        for n in names:
            for p in self.outputs[n]:
                remove(self.out / p)

    def finish(self, name: str, **extra) -> None:
        """Mark stage ``name`` finished (its outputs are complete), with ``extra`` facts."""
        self.records[name].update(done=True, **extra)
        self._save()
