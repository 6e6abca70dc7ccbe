"""Shared checkpoint plumbing: the Reader base, index files, sizes and auxiliary files.

`safetensors_io` and `torch_io` build their readers on `Reader`; `io.open_checkpoint` picks one.
``CheckpointError`` / ``first_line`` (from `jaxprune.errors`) and ``atomic_output_dir`` (from
`jaxprune.atomic`) are re-exported here for the converters.
"""

from __future__ import annotations

import abc
import json
import math
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from jaxprune.atomic import atomic_output_dir
from jaxprune.errors import CheckpointError, UserError, first_line

AUX_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
)

_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?\s*(b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Where a tensor lives and what it looks like, known without reading its data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    file: Path

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return math.prod(self.shape) * self.dtype.itemsize


class Reader(abc.ABC):
    """Read-only, lazy access to the named tensors of a checkpoint (one or more files).

    Subclasses fill `_infos` and implement `_load`; arrays returned by `get` are read-only.
    """

    def __init__(self, path: Path, infos: Mapping[str, TensorInfo], files: list[Path]) -> None:
        self.path = path
        self.files = files
        self._infos = dict(infos)
        self._closed = False

    def keys(self) -> list[str]:
        """Tensor names, sorted."""
        return sorted(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        """Shape, dtype and file of `name`."""
        try:
            return self._infos[name]
        except KeyError:
            raise CheckpointError(f"tensor {name!r} not found in {self.path}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """Stored shape of `name`."""
        return self.info(name).shape

    def dtype(self, name: str) -> np.dtype:
        """Stored dtype of `name` (bf16 and fp8 as `ml_dtypes` types)."""
        return self.info(name).dtype

    def nbytes(self, name: str) -> int:
        """Size of `name`'s data in bytes."""
        return self.info(name).nbytes

    def get(self, name: str) -> np.ndarray:
        """`name` as a read-only numpy array with its stored shape and dtype, bit-exact."""
        if self._closed:
            raise CheckpointError(f"reader for {self.path} is closed (reading {name!r})")
        return self._load(name, self.info(name))

    @abc.abstractmethod
    def _load(self, name: str, info: TensorInfo) -> np.ndarray:
        """Read one tensor (subclasses)."""

    def close(self) -> None:
        """Release the files; arrays already returned stay valid."""
        self._closed = True

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self)} tensors)"


def read_weight_map(index: Path) -> dict[str, Path]:
    """The `weight_map` of a sharded-checkpoint index as {tensor: shard path}; shards must exist."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{index} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read index {index}: {first_line(exc)}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"index {index} has no 'weight_map' {{tensor: shard file}} object")
    shards: dict[str, Path] = {}
    out: dict[str, Path] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise CheckpointError(f"index {index}: shard of tensor {name!r} is not a file name")
        if shard not in shards:
            shards[shard] = index.parent / shard
            if not shards[shard].is_file():
                raise CheckpointError(
                    f"shard {shard!r} listed in {index} (for tensor {name!r}) not found"
                )
        out[name] = shards[shard]
    return out


def check_placement(
    index: Path, weight_map: Mapping[str, Path], found: Mapping[Path, Mapping[str, TensorInfo]]
) -> dict[str, TensorInfo]:
    """Check each indexed tensor is in the shard the index names; return {tensor: info}."""
    infos: dict[str, TensorInfo] = {}
    for name, shard in weight_map.items():
        info = found[shard].get(name)
        if info is None:
            actual = [p.name for p, names in found.items() if name in names]
            where = f"it is in {actual[0]!r}" if actual else "no shard holds it"
            raise CheckpointError(
                f"index {index} puts tensor {name!r} in {shard.name!r}, but {where}"
            )
        infos[name] = info
    return infos


def parse_size(size: str | int) -> int:
    """Bytes in a size such as "5GB", "500MB", "1.5GB", "2GiB" or "123".

    Units are case-insensitive; KB/MB/GB/TB are powers of 1000 (as transformers), KiB/MiB/GiB/TiB
    powers of 1024, and a trailing B always means bytes. Fractions of a byte are rounded down.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise UserError(f"size must be >= 0, got {size}")
        return size
    match = _SIZE_RE.match(size) if isinstance(size, str) else None
    if match is None:
        raise UserError(
            f"invalid size {size!r}: expected a number with an optional unit, "
            "e.g. '123', '500MB', '1.5GB' or '2GiB'"
        )
    number, unit, _ = match.groups()
    unit = (unit or "").lower()
    scale = _BINARY[unit] if unit.endswith("i") else _DECIMAL[unit]
    return math.floor(Fraction(number) * scale)


def copy_aux_files(src_dir: Path, dst_dir: Path) -> list[str]:
    """Copy the tokenizer / generation / chat-template files present in `src_dir`; return names."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise CheckpointError(f"source directory {src_dir} not found")
    dst_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in AUX_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, dst_dir / name)
            copied.append(name)
    return copied


__all__ = [
    "AUX_FILES",
    "CheckpointError",
    "Reader",
    "TensorInfo",
    "atomic_output_dir",
    "check_placement",
    "copy_aux_files",
    "first_line",
    "parse_size",
    "read_weight_map",
]
