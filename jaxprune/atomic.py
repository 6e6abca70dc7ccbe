"""Atomic outputs: a file or directory appears whole, by rename, or not at all.

Every writer that must not leave a half-written result behind goes through these helpers:
a whole output directory (:func:`atomic_output_dir`), a single file (:func:`atomic_file`,
:func:`atomic_write_text`, :func:`atomic_write_bytes`), or a finished staging directory
published into an existing one with a marker file last (:func:`publish_into`). Temporary
names are hidden siblings of the target, so the final rename never crosses a filesystem.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from jaxprune.errors import CheckpointError, first_line


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{secrets.token_hex(4)}{path.suffix}"


@contextlib.contextmanager
def atomic_output_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to write into; rename it to `out` on success.

    Refuses an `out` that is a file or a non-empty directory. On any exception the temporary
    directory is removed, so nothing is left at `out`.
    """
    out = Path(out)
    if out.is_file() or out.is_symlink():
        raise CheckpointError(f"output {out} exists and is a file or a link")
    if out.is_dir() and any(out.iterdir()):
        raise CheckpointError(f"output directory {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:  # os.mkdir (unlike mkdtemp) honours the umask, so the result is not 0o700
        tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            continue
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if out.is_dir():
            out.rmdir()  # still empty (checked above); rmdir fails if something appeared
        os.rename(tmp, out)
    except OSError as exc:
        raise CheckpointError(
            f"cannot move finished output {tmp} to {out}: {first_line(exc)} (output kept at {tmp})"
        ) from None


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path (same suffix) to write one file to; on success it
    replaces `path` (which may exist), on any exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def publish_into(staging: Path, out: Path, *, last: str) -> None:
    """Move every entry of the finished directory `staging` into the existing directory
    `out`, replacing entries of the same name, with `staging / last` (the marker that makes
    `out` complete, e.g. a metadata file) moved last; then remove `staging`.

    An existing `out / last` is removed first and each entry moves by rename, so a reader
    that checks for `last` never sees a mix of old and new entries.
    """
    staging, out = Path(staging), Path(out)
    if not (staging / last).exists():
        raise FileNotFoundError(f"publish_into: {staging / last} (the marker) was not written")
    marker = out / last
    if marker.is_file() or marker.is_symlink():
        marker.unlink()  # `out` stops being complete before any of its entries change
    items = sorted(p for p in staging.iterdir() if p.name != last) + [staging / last]
    for item in items:
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()


__all__ = [
    "atomic_file",
    "atomic_output_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "publish_into",
]
