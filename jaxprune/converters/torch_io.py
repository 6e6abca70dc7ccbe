"""PyTorch state dicts (`*.bin`, `*.pt`, `*.pth`, sharded via an index) as numpy, lazily.

Files are loaded with `torch.load(..., weights_only=True)`, so no arbitrary object is ever
unpickled. Zip-format files (everything `torch.save` has written since 1.6) are memory-mapped,
so opening a checkpoint reads only its pickled structure; tensors become numpy one `get` at a
time. Legacy (non-zip) files cannot be memory-mapped: at most one of them is held in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from jaxprune.converters.fsutil import (
    CheckpointError,
    Reader,
    TensorInfo,
    check_placement,
    first_line,
    read_weight_map,
)

_ZIP_MAGIC = b"PK\x03\x04"


def import_torch(path: Path) -> Any:
    """The `torch` module, or a CheckpointError naming the file that needs it."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"torch is required to read {path} (pip install torch)") from None
    return torch


def _dtype_table(torch: Any) -> dict[Any, tuple[np.dtype, Any]]:
    """{torch dtype: (numpy dtype, same-width torch dtype that `.numpy()` supports)}."""
    table: dict[Any, tuple[np.dtype, Any]] = {
        getattr(torch, name): (np.dtype(name), getattr(torch, name))
        for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8")
    }
    table[torch.bool] = (np.dtype(np.bool_), torch.bool)
    table[torch.bfloat16] = (np.dtype(ml_dtypes.bfloat16), torch.int16)
    for name in ("float8_e4m3fn", "float8_e5m2"):
        if hasattr(torch, name):
            table[getattr(torch, name)] = (np.dtype(getattr(ml_dtypes, name)), torch.uint8)
    return table


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _ZIP_MAGIC


def _load_error(path: Path, exc: Exception) -> CheckpointError:
    lines = [line.strip() for line in str(exc).splitlines()]
    refused = [
        line for line in lines if "Unsupported global" in line or "Unsupported operand" in line
    ]
    if refused or "Weights only load failed" in str(exc):
        why = refused[0][:160] if refused else "non-tensor objects"
        return CheckpointError(
            f"{path}: refusing to unpickle objects other than tensors (weights_only=True): {why}"
        )
    return CheckpointError(
        f"cannot load torch checkpoint {path}: {type(exc).__name__}: {first_line(exc)}"
    )


def load_state_dict(path: Path) -> tuple[dict[str, Any], bool]:
    """(state dict, memory-mapped?) of one torch file; never unpickles arbitrary objects."""
    torch = import_torch(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    mmap = _is_zip(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for corrupt or refused files
        raise _load_error(path, exc) from None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):  # common {"state_dict": {...}, "epoch": ...} wrappers
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor"
            )
    return obj, mmap


class TorchReader(Reader):
    """One or more torch state-dict files (optionally through an index) as numpy arrays."""

    def __init__(self, path: Path, files: Sequence[Path], weight_map: Mapping[str, Path] | None):
        self._torch = import_torch(files[0] if files else path)
        self._table = _dtype_table(self._torch)
        self._mapped: dict[Path, dict[str, Any]] = {}  # mmap'd files: cheap, kept open
        self._last: tuple[Path, dict[str, Any]] | None = None  # one legacy file in memory
        found: dict[Path, dict[str, TensorInfo]] = {}
        for file in files:
            found[file] = {n: self._info(file, n, t) for n, t in self._state_dict(file).items()}
        if weight_map is not None:
            infos = check_placement(path, weight_map, found)
        else:
            infos = {}
            for file, file_infos in found.items():
                for name, info in file_infos.items():
                    if name in infos:
                        raise CheckpointError(
                            f"tensor {name!r} is in both {infos[name].file} and {file}"
                        )
                    infos[name] = info
        super().__init__(path, infos, list(files))

    @classmethod
    def from_files(cls, files: Sequence[Path], path: Path | None = None) -> TorchReader:
        """Read `files` as one checkpoint; a tensor name in two files is an error."""
        files = [Path(p) for p in files]
        return cls(path or files[0], files, None)

    @classmethod
    def from_index(cls, index: Path) -> TorchReader:
        """Read a sharded checkpoint through its `*.bin.index.json`."""
        weight_map = read_weight_map(index)
        return cls(index, sorted(set(weight_map.values())), weight_map)

    def _info(self, file: Path, name: str, tensor: Any) -> TensorInfo:
        if tensor.dtype not in self._table:
            raise CheckpointError(f"{file}: tensor {name!r} has unsupported dtype {tensor.dtype}")
        return TensorInfo(tuple(tensor.shape), self._table[tensor.dtype][0], file)

    def _state_dict(self, file: Path) -> dict[str, Any]:
        if file in self._mapped:
            return self._mapped[file]
        if self._last is not None and self._last[0] == file:
            return self._last[1]
        self._last = None  # free the previous legacy file before loading the next
        state, mapped = load_state_dict(file)
        if mapped:
            self._mapped[file] = state
        else:
            self._last = (file, state)
        return state

    def _load(self, name: str, info: TensorInfo) -> np.ndarray:
        tensor = self._state_dict(info.file)[name].detach()
        np_dtype, view_as = self._table[tensor.dtype]
        # numpy has no bf16/fp8: reinterpret their bits through a same-width int, bit-exact
        arr = tensor.view(view_as).numpy().view(np_dtype)
        arr.flags.writeable = False
        return arr

    def close(self) -> None:
        """Drop the loaded state dicts; arrays already returned stay valid."""
        self._mapped.clear()
        self._last = None
        super().close()
