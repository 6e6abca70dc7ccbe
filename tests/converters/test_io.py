"""Checkpoint I/O: safetensors (no torch) and torch readers, the streaming writer, helpers."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import struct
import sys
import weakref
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as stnp
from safetensors import safe_open

from jaxprune.converters.io import (
    AUX_FILES,
    CheckpointError,
    atomic_output_dir,
    copy_aux_files,
    open_checkpoint,
    parse_size,
    read_header,
    write_safetensors,
)

RNG = np.random.default_rng(0)


def _random(shape: tuple[int, ...], dtype: object) -> np.ndarray:
    """Random bit patterns (NaN payloads, infs, denormals included) of any dtype."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return RNG.integers(0, 2, shape).astype(np.bool_)
    raw = RNG.integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.reshape(-1).view(np.uint8)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.dtype(got.dtype) == np.dtype(want.dtype), (got.dtype, want.dtype)
    np.testing.assert_array_equal(_bits(got), _bits(want))


# Every dtype the readers and writer support, with odd shapes, a scalar and an empty tensor.
ARRAYS = {
    "f32": _random((3, 5), np.float32),
    "f16": _random((7,), np.float16),
    "bf16": _random((2, 3, 4), ml_dtypes.bfloat16),
    "f64": _random((2, 2), np.float64),
    "i64": _random((3,), np.int64),
    "i32": _random((4, 1), np.int32),
    "i16": _random((5,), np.int16),
    "i8": _random((3, 3), np.int8),
    "u8": _random((9,), np.uint8),
    "bool": _random((2, 5), np.bool_),
    "f8e4m3": _random((6,), ml_dtypes.float8_e4m3fn),
    "f8e5m2": _random((6,), ml_dtypes.float8_e5m2),
    "scalar": np.array(1.5, np.float32),
    "empty": np.zeros((0, 4), np.float32),
}
NUMPY_LOADABLE = [k for k in ARRAYS if not k.startswith("f8")]  # safetensors.numpy lacks fp8


def _specs(arrays: dict[str, np.ndarray]) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    return [(k, v.shape, v.dtype) for k, v in arrays.items()]


def _write(out: Path, arrays: dict[str, np.ndarray], **kw) -> list[Path]:
    return write_safetensors(out, _specs(arrays), iter(arrays.items()), **kw)


def _snapshot(d: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(d.iterdir())
    }


def _raw_safetensors(path: Path, header: bytes, data: bytes = b"", n: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if n is None else n) + header + data)
    return path


# ----------------------------------------------------------------------------- safetensors


def test_our_writer_their_reader(tmp_path):
    files = _write(tmp_path, {k: ARRAYS[k] for k in NUMPY_LOADABLE})  # fp8: see the torch test
    assert files == [tmp_path / "model.safetensors"]
    loaded = stnp.load_file(files[0])
    assert sorted(loaded) == sorted(NUMPY_LOADABLE)
    for k in NUMPY_LOADABLE:
        _assert_same(loaded[k], ARRAYS[k])
    with safe_open(files[0], framework="np") as f:
        assert f.metadata() == {"format": "pt"}


def test_their_writer_our_reader(tmp_path):
    path = tmp_path / "x.safetensors"
    stnp.save_file(ARRAYS, path, metadata={"k": "v"})
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == sorted(ARRAYS)
        assert ckpt.metadata == {"k": "v"}
        for k, want in ARRAYS.items():
            assert ckpt.shape(k) == want.shape and ckpt.dtype(k) == want.dtype
            assert ckpt.nbytes(k) == want.nbytes
            _assert_same(ckpt.get(k), want)


def test_writer_output_is_aligned_padded_and_rereads(tmp_path):
    (path,) = _write(tmp_path, ARRAYS, metadata=None)
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert n % 8 == 0
    header = json.loads(path.read_bytes()[8 : 8 + n])
    assert "__metadata__" not in header
    infos, starts, _ = read_header(path)
    for name, info in infos.items():
        assert starts[name] % info.dtype.itemsize == 0, name
    with open_checkpoint(tmp_path) as ckpt:
        for k, want in ARRAYS.items():
            _assert_same(ckpt.get(k), want)


def test_torch_safetensors_both_directions(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    _write(tmp_path / "ours", ARRAYS)
    loaded = load_file(tmp_path / "ours" / "model.safetensors")
    bf = loaded["bf16"]
    assert bf.dtype == torch.bfloat16
    np.testing.assert_array_equal(bf.view(torch.int16).numpy(), ARRAYS["bf16"].view(np.int16))
    assert loaded["f8e4m3"].dtype == torch.float8_e4m3fn
    np.testing.assert_array_equal(loaded["f32"].numpy().view(np.uint32), ARRAYS["f32"].view("u4"))

    tensors = {
        "bf16": torch.randn(3, 4).to(torch.bfloat16),
        "f16": torch.randn(5).half(),
        "i64": torch.arange(4),
        "bool": torch.tensor([True, False]),
        "f8": torch.randn(4).to(torch.float8_e5m2),
    }
    save_file(tensors, tmp_path / "theirs.safetensors")
    with open_checkpoint(tmp_path / "theirs.safetensors") as ckpt:
        _assert_same(
            ckpt.get("bf16"), tensors["bf16"].view(torch.int16).numpy().view(ckpt.dtype("bf16"))
        )
        assert ckpt.dtype("bf16") == np.dtype(ml_dtypes.bfloat16)
        assert ckpt.dtype("f8") == np.dtype(ml_dtypes.float8_e5m2)
        np.testing.assert_array_equal(
            ckpt.get("f8").view(np.uint8), tensors["f8"].view(torch.uint8)
        )
        for k in ("f16", "i64", "bool"):
            _assert_same(ckpt.get(k), tensors[k].numpy())


def test_sharded_writing_and_reading(tmp_path):
    arrays = {f"layers.{i}.w": _random((10, 10), np.float32) for i in range(7)}  # 400 B each
    arrays["tiny"] = _random((3,), ml_dtypes.bfloat16)
    files = _write(tmp_path, arrays, max_shard_bytes="1KB")
    shards, index_path = files[:-1], files[-1]
    assert len(shards) == 4
    assert [p.name for p in shards] == [f"model-{k:05d}-of-00004.safetensors" for k in (1, 2, 3, 4)]
    assert index_path.name == "model.safetensors.index.json"
    assert all(p.stat().st_size <= 1000 + 256 for p in shards)  # data <= limit, + header
    index = json.loads(index_path.read_text())
    assert index["metadata"] == {
        "total_size": sum(a.nbytes for a in arrays.values()),
        "total_parameters": sum(a.size for a in arrays.values()),
    }
    assert sorted(index["weight_map"]) == sorted(arrays)
    by_shard: dict[str, list[str]] = {}
    for name, shard in index["weight_map"].items():  # transformers-style: shard by shard
        by_shard.setdefault(shard, []).append(name)
    for shard, names in by_shard.items():
        with safe_open(tmp_path / shard, framework="np") as f:
            assert sorted(f.keys()) == sorted(names)
            for name in names:
                _assert_same(f.get_tensor(name), arrays[name])
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.keys() == sorted(arrays)
        assert ckpt.files == shards
        for k, want in arrays.items():
            _assert_same(ckpt.get(k), want)


def test_sharding_edge_cases(tmp_path):
    arrays = {"a": np.ones(100, np.float32), "big": np.ones(1000, np.float32)}
    assert [p.name for p in _write(tmp_path / "fits", arrays, max_shard_bytes=10**6)] == [
        "model.safetensors"
    ]
    files = _write(tmp_path / "over", arrays, max_shard_bytes=500, filename_prefix="w")
    assert [p.name for p in files] == [
        "w-00001-of-00002.safetensors",
        "w-00002-of-00002.safetensors",
        "w.safetensors.index.json",
    ]  # a tensor larger than the limit gets a shard of its own
    with pytest.raises(ValueError, match="positive"):
        _write(tmp_path / "zero", arrays, max_shard_bytes=0)


def test_writer_holds_one_tensor_at_a_time(tmp_path):
    refs: list[weakref.ref] = []
    specs = [(f"t{i}", (64,), np.dtype(np.float32)) for i in range(5)]

    def produce():
        for name, _, _ in specs:
            gc.collect()
            assert all(r() is None for r in refs), "writer kept a previous tensor alive"
            arr = np.full(64, len(refs), np.float32)
            refs.append(weakref.ref(arr))
            yield name, arr
            del arr

    write_safetensors(tmp_path, specs, produce(), max_shard_bytes=600)
    with open_checkpoint(tmp_path) as ckpt:
        assert [float(ckpt.get(f"t{i}")[0]) for i in range(5)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ([("a", np.zeros(3, np.float32)), ("c", np.zeros(2, np.int8))], "expected tensor 'b'.*'c'"),
        (
            [("a", np.zeros(4, np.float32))],
            "tensor 'a' is float32\\[4\\], spec says float32\\[3\\]",
        ),
        ([("a", np.zeros(3, np.float16))], "tensor 'a' is float16"),
        ([("a", np.zeros(3, np.float32))], "tensors ended before 'b'"),
        (
            [("a", np.zeros(3, np.float32)), ("b", np.zeros(2, np.int8)), ("z", np.zeros(1))],
            "more tensors than specs.*'z'",
        ),
    ],
)
def test_writer_spec_mismatch(tmp_path, tensors, match):
    specs = [("a", (3,), np.float32), ("b", (2,), np.int8)]
    with pytest.raises(CheckpointError, match=match) as err:
        write_safetensors(tmp_path / "out", specs, iter(tensors), max_shard_bytes=12)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []  # partial files are removed


def test_writer_rejects_bad_specs(tmp_path):
    with pytest.raises(CheckpointError, match="duplicate tensor name 'a'"):
        write_safetensors(tmp_path, [("a", (1,), np.int8), ("a", (1,), np.int8)], iter([]))
    with pytest.raises(CheckpointError, match="complex64 cannot be stored"):
        write_safetensors(tmp_path, [("c", (1,), np.complex64)], iter([]))


def test_reads_are_memmapped_lazy_and_read_only(tmp_path):
    # A 256 MiB tensor in a sparse file: reading one element must not load the file.
    n_elems = 64 * 2**20
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [n_elems], "data_offsets": [0, 4 * n_elems]}}
    )
    path = _raw_safetensors(tmp_path / "big.safetensors", header.encode())
    with open(path, "r+b") as f:
        f.truncate(8 + len(header) + 4 * n_elems)

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    with open_checkpoint(path) as ckpt:
        arr = ckpt.get("w")
        assert isinstance(arr, np.memmap)
        assert arr.shape == (n_elems,) and arr[n_elems // 2] == 0
        assert rss() - before < 32 * 2**20
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1


@pytest.mark.parametrize(
    ("header", "data", "n", "match"),
    [
        (b"{not json", b"", None, "not valid JSON"),
        (b"[1, 2]", b"", None, "not a JSON object"),
        (b"{}", b"", 2**60, "header length .* is invalid"),
        (b'{"a": {"dtype": "F32", "shape": [2]}}', b"", 500, "truncated: header needs"),
        (b'{"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}', b"\0" * 8, None,
         "tensor 'a': unsupported dtype 'C64'"),
        (b'{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}', b"\0" * 8, None,
         "tensor 'a': data_offsets .* 8 bytes but shape .* needs 12"),
        (b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', b"\0" * 8, None,
         "invalid shape"),
        (b'{"a": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]},'
         b' "b": {"dtype": "I8", "shape": [4], "data_offsets": [2, 6]}}', b"\0" * 8, None,
         "overlaps"),
        (b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', b"\0" * 10, None,
         "truncated: data needs"),
    ],
)  # fmt: skip
def test_corrupt_safetensors(tmp_path, header, data, n, match):
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, data, n)
    with pytest.raises(CheckpointError, match=match) as err:
        open_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_file(tmp_path):
    (path,) = _write(tmp_path, {"w": np.ones((4, 4), np.float32)})
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CheckpointError, match="truncated.*'w'"):
        open_checkpoint(tmp_path)
    path.write_bytes(b"\x10\0\0")
    with pytest.raises(CheckpointError, match="truncated: 3 bytes"):
        open_checkpoint(path)


def test_index_problems(tmp_path):
    arrays = {k: np.full(10, i, np.float32) for i, k in enumerate("abcd")}
    files = _write(tmp_path, arrays, max_shard_bytes=80)
    index_path = files[-1]
    index = json.loads(index_path.read_text())

    index["weight_map"]["a"] = index["weight_map"]["c"]  # wrong shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError, match="puts tensor 'a' in 'model-00002.* it is in 'model-00001"
    ):
        open_checkpoint(tmp_path)

    index["weight_map"]["a"] = "model-00009-of-00009.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError, match="shard 'model-00009-of-00009.safetensors' .* not found"
    ):
        open_checkpoint(index_path)

    index_path.write_text("{oops")
    with pytest.raises(CheckpointError, match="cannot read index"):
        open_checkpoint(index_path)
    index_path.write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match="no 'weight_map'"):
        open_checkpoint(index_path)


def test_reader_api_and_directory_resolution(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        open_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no weights found"):
        open_checkpoint(tmp_path)
    stnp.save_file({"x": np.ones(2, np.int8)}, tmp_path / "a.safetensors")
    stnp.save_file({"y": np.zeros(3, np.int16)}, tmp_path / "b.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read: safetensors win")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.keys() == ["x", "y"] and list(ckpt) == ["x", "y"] and len(ckpt) == 2
    assert "x" in ckpt and "z" not in ckpt
    assert ckpt.files == [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    assert ckpt.shape("y") == (3,) and ckpt.dtype("y") == np.int16 and ckpt.nbytes("y") == 6
    with pytest.raises(CheckpointError, match="tensor 'z' not found"):
        ckpt.get("z")
    ckpt.close()
    with pytest.raises(CheckpointError, match="closed"):
        ckpt.get("x")
    stnp.save_file({"x": np.ones(2, np.int8)}, tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="'x' is in both"):
        open_checkpoint(tmp_path)


def test_inputs_never_modified(tmp_path):
    _write(tmp_path, ARRAYS, max_shard_bytes=64)
    before = _snapshot(tmp_path)
    with open_checkpoint(tmp_path) as ckpt:
        for k in ckpt:
            np.asarray(ckpt.get(k)).copy()
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- torch


def _torch_state(torch, fp8: bool = True) -> dict:
    state = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "f32": torch.randn(4),
        "f16": torch.randn(2, 2).half(),
        "i64": torch.arange(6).reshape(2, 3),
        "bool": torch.tensor([True, False, True]),
        "u8": torch.arange(5, dtype=torch.uint8),
        "t": torch.randn(3, 4).t(),  # non-contiguous view
    }
    if fp8:  # torch cannot read fp8 back from legacy (non-zip) files with weights_only=True
        state["f8"] = torch.randn(4).to(torch.float8_e4m3fn)
    return state


def _check_torch(ckpt, state, torch) -> None:
    assert ckpt.keys() == sorted(state)
    for k, t in state.items():
        arr = ckpt.get(k)
        assert arr.shape == tuple(t.shape) and ckpt.shape(k) == tuple(t.shape)
        assert not arr.flags.writeable
        if t.dtype in (torch.bfloat16, torch.float8_e4m3fn):
            width = torch.int16 if t.dtype == torch.bfloat16 else torch.uint8
            want = t.view(width).numpy()
            np.testing.assert_array_equal(arr.view(want.dtype), want)
        else:
            _assert_same(arr, t.numpy())
    assert ckpt.dtype("bf16") == np.dtype(ml_dtypes.bfloat16)
    if "f8" in state:
        assert ckpt.dtype("f8") == np.dtype(ml_dtypes.float8_e4m3fn)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pt", "legacy.bin"])
def test_torch_state_dict(tmp_path, name):
    torch = pytest.importorskip("torch")
    legacy = name == "legacy.bin"
    state = _torch_state(torch, fp8=not legacy)
    torch.save(state, tmp_path / name, _use_new_zipfile_serialization=not legacy)
    before = _snapshot(tmp_path)
    with open_checkpoint(tmp_path) as ckpt:
        _check_torch(ckpt, state, torch)
    with open_checkpoint(tmp_path / name) as ckpt:
        _check_torch(ckpt, state, torch)
    assert _snapshot(tmp_path) == before


def test_torch_sharded_index_and_wrapper(tmp_path):
    torch = pytest.importorskip("torch")
    state = _torch_state(torch)
    names = sorted(state)
    shards = {
        "pytorch_model-00001-of-00002.bin": names[:4],
        "pytorch_model-00002-of-00002.bin": names[4:],
    }
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, tmp_path / shard)
    index = {"weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with open_checkpoint(tmp_path) as ckpt:
        _check_torch(ckpt, state, torch)
        assert [p.name for p in ckpt.files] == sorted(shards)

    index["weight_map"][names[0]] = "pytorch_model-00002-of-00002.bin"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"tensor '{names[0]}' in 'pytorch_model-00002"):
        open_checkpoint(tmp_path)

    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "ckpt.pt")
    with open_checkpoint(tmp_path / "ckpt.pt") as ckpt:
        assert ckpt.keys() == ["w"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_torch_never_unpickles_objects(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.ones(2), "evil": _Evil()}, tmp_path / "model.bin")
    with pytest.raises(CheckpointError, match="refusing to unpickle") as err:
        open_checkpoint(tmp_path / "model.bin")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()
    (tmp_path / "model.bin").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(CheckpointError, match="cannot load torch checkpoint .*model.bin"):
        open_checkpoint(tmp_path / "model.bin")


def test_torch_missing(tmp_path, monkeypatch):
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(CheckpointError, match="torch is required to read .*pytorch_model.bin"):
        open_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("123", 123),
        (123, 123),
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("1.5GB", 1_500_000_000),
        ("2GiB", 2 * 2**30),
        ("10 kib", 10 * 1024),
        ("7B", 7),
        ("3K", 3000),
    ],
)
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "GB", "-5GB", "5XB", "5 G B x", "1e9", "five"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_atomic_output_dir(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "f.txt").write_text("x")
        assert not out.exists()
    assert (out / "f.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    with pytest.raises(CheckpointError, match="not empty"), atomic_output_dir(out):
        pass
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is a file"), atomic_output_dir(tmp_path / "file"):
        pass

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="boom"), atomic_output_dir(failed) as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]

    (tmp_path / "empty").mkdir()
    with atomic_output_dir(tmp_path / "empty") as tmp:
        (tmp / "g").write_text("y")
    assert (tmp_path / "empty" / "g").read_text() == "y"


def test_copy_aux_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("tokenizer.json", "generation_config.json", "chat_template.jinja", "other.txt"):
        (src / name).write_text(name)
    copied = copy_aux_files(src, tmp_path / "dst")
    assert copied == ["tokenizer.json", "generation_config.json", "chat_template.jinja"]
    assert set(copied) <= set(AUX_FILES)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == sorted(copied)
    assert (tmp_path / "dst" / "tokenizer.json").read_text() == "tokenizer.json"
    with pytest.raises(CheckpointError, match="not found"):
        copy_aux_files(tmp_path / "missing", tmp_path / "dst")
