"""The atomic-output helpers: results appear whole or not at all."""

import numpy as np
import pytest

from jaxprune.atomic import (
    atomic_file,
    atomic_output_dir,
    atomic_write_bytes,
    atomic_write_text,
    publish_into,
)
from jaxprune.converters import fsutil
from jaxprune.errors import CheckpointError


def test_converters_share_the_one_helper():
    assert fsutil.atomic_output_dir is atomic_output_dir
    assert fsutil.CheckpointError is CheckpointError


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "sub"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "scores.npz"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_file(path) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.npz"]


def test_atomic_file_keeps_the_suffix_numpy_needs(tmp_path):
    path = tmp_path / "s.npz"
    with atomic_file(path) as tmp:
        np.savez(tmp, a=np.arange(3))
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_publish_into_replaces_entries_and_writes_the_marker_last(tmp_path):
    out = tmp_path / "run"
    (out / "params").mkdir(parents=True)
    (out / "params" / "old").write_text("old")
    (out / "meta.json").write_text("old")
    (out / "checkpoints").mkdir()
    staging = out / ".final.tmp"
    (staging / "params").mkdir(parents=True)
    (staging / "params" / "new").write_text("new")
    (staging / "tokenizer.json").write_text("tok")
    (staging / "meta.json").write_text("new")
    publish_into(staging, out, last="meta.json")
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "meta.json",
        "params",
        "tokenizer.json",
    ]
    assert [p.name for p in (out / "params").iterdir()] == ["new"]
    assert (out / "meta.json").read_text() == "new"


def test_publish_into_needs_the_marker(tmp_path):
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "params").mkdir()
    with pytest.raises(FileNotFoundError, match="marker"):
        publish_into(tmp_path / "staging", tmp_path, last="meta.json")
