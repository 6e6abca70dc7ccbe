"""Checkpoint file I/O for the HF converters: one entry point for reading and writing.

`open_checkpoint` returns a `Reader` over safetensors (no torch needed) or PyTorch state dicts;
`write_safetensors` streams tensors into (sharded) safetensors. Memory stays within a small
multiple of the largest tensor: readers memory-map, the writer holds one tensor at a time.
Format details live in `safetensors_io` / `torch_io`; errors, sizes and directories in `fsutil`.

    with open_checkpoint(src) as ckpt, atomic_output_dir(out) as tmp:
        specs = [(name, ckpt.shape(name), ckpt.dtype(name)) for name in ckpt.keys()]
        write_safetensors(tmp, specs, ((n, ckpt.get(n)) for n, _, _ in specs),
                          max_shard_bytes=parse_size("5GB"))
        copy_aux_files(src, tmp)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from jaxprune.converters.fsutil import (
    AUX_FILES,
    CheckpointError,
    Reader,
    TensorInfo,
    atomic_output_dir,
    copy_aux_files,
    first_line,
    parse_size,
    read_weight_map,
)
from jaxprune.converters.safetensors_io import (
    CODES,
    SafetensorsReader,
    encode_header,
    read_header,
)
from jaxprune.converters.torch_io import TorchReader, load_state_dict
from jaxprune.errors import UserError

__all__ = [
    "AUX_FILES",
    "CheckpointError",
    "Reader",
    "SafetensorsReader",
    "TensorInfo",
    "TorchReader",
    "atomic_output_dir",
    "copy_aux_files",
    "encode_header",
    "load_state_dict",
    "open_checkpoint",
    "parse_size",
    "read_header",
    "write_safetensors",
]

TORCH_SUFFIXES = (".bin", ".pt", ".pth")
# Files that trainers leave next to weights; they are not state dicts.
_NOT_WEIGHTS = re.compile(
    r"^(training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$"
)
_PT_METADATA: Mapping[str, str] = MappingProxyType({"format": "pt"})


def _open_index(index: Path) -> Reader:
    shards = set(read_weight_map(index).values())
    if all(shard.name.endswith(".safetensors") for shard in shards):
        return SafetensorsReader.from_index(index)
    return TorchReader.from_index(index)


def _open_file(path: Path) -> Reader:
    if path.name.endswith(".index.json"):
        return _open_index(path)
    if path.suffix == ".safetensors":
        return SafetensorsReader.from_files([path])
    if path.suffix in TORCH_SUFFIXES:
        return TorchReader.from_files([path])
    with open(path, "rb") as f:  # unknown suffix: sniff (zip or pickle means torch)
        magic = f.read(4)
    if magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80":
        return TorchReader.from_files([path])
    return SafetensorsReader.from_files([path])


def _single_index(directory: Path, pattern: str) -> Path | None:
    indexes = sorted(directory.glob(pattern))
    if len(indexes) > 1:
        names = ", ".join(p.name for p in indexes)
        raise CheckpointError(f"{directory} has several indexes ({names}); pass one of them")
    return indexes[0] if indexes else None


def _open_dir(directory: Path) -> Reader:
    if (directory / "model.safetensors").is_file():
        return SafetensorsReader.from_files([directory / "model.safetensors"], directory)
    if (directory / "model.safetensors.index.json").is_file():
        return SafetensorsReader.from_index(directory / "model.safetensors.index.json")
    if index := _single_index(directory, "*.safetensors.index.json"):
        return SafetensorsReader.from_index(index)
    if files := sorted(p for p in directory.glob("*.safetensors") if p.is_file()):
        return SafetensorsReader.from_files(files, directory)
    if (directory / "pytorch_model.bin").is_file():
        return TorchReader.from_files([directory / "pytorch_model.bin"], directory)
    if index := _single_index(directory, "*.bin.index.json"):
        return TorchReader.from_index(index)
    files = sorted(
        p
        for p in directory.iterdir()
        if p.suffix in TORCH_SUFFIXES and p.is_file() and not _NOT_WEIGHTS.match(p.name)
    )
    if files:
        return TorchReader.from_files(files, directory)
    raise CheckpointError(
        f"no weights found in {directory} (looked for *.safetensors, *.safetensors.index.json, "
        "pytorch_model.bin, *.bin.index.json, *.bin, *.pt, *.pth)"
    )


def open_checkpoint(path: str | Path) -> Reader:
    """A `Reader` over the weights at `path`: a checkpoint directory or a single file.

    In a directory, safetensors win: `model.safetensors`, then `model.safetensors.index.json`,
    another `*.safetensors.index.json`, or all `*.safetensors`; otherwise torch files
    (`pytorch_model.bin`, a `*.bin.index.json`, or all `*.bin` / `*.pt` / `*.pth`). A file may
    be a safetensors file, a torch file or an index. Sharded indexes are authoritative: only the
    tensors in their `weight_map` are read, and each must be in the shard the index names.
    """
    path = Path(path)
    if path.is_dir():
        return _open_dir(path)
    if path.is_file():
        return _open_file(path)
    raise CheckpointError(f"checkpoint {path} not found")


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _normalize_specs(specs: Iterable[tuple[str, Sequence[int], object]]) -> list[_Spec]:
    out: list[_Spec] = []
    seen: set[str] = set()
    for name, shape, dtype in specs:
        dt = np.dtype(dtype)
        dt = dt.newbyteorder("<") if dt.byteorder == ">" else dt
        if not isinstance(name, str) or not name or name == "__metadata__" or name in seen:
            raise CheckpointError(f"invalid or duplicate tensor name {name!r} in specs")
        if dt not in CODES:
            raise CheckpointError(f"tensor {name!r}: dtype {dt} cannot be stored in safetensors")
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise CheckpointError(f"tensor {name!r}: invalid shape {dims}")
        seen.add(name)
        out.append(_Spec(name, dims, dt))
    return out


def _plan_shards(specs: list[_Spec], limit: int | None) -> list[list[_Spec]]:
    """Greedy, in order: a new shard starts when the next tensor would overflow the limit."""
    groups: list[list[_Spec]] = [[]]
    size = 0
    for spec in specs:
        if limit is not None and groups[-1] and size + spec.nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += spec.nbytes
    return groups


def _write_shard(
    path: Path, group: list[_Spec], tensors: Iterator, metadata: Mapping[str, str] | None
) -> None:
    """Write the header from the specs, then each arriving tensor at its offset (seeking)."""
    prefix, offsets, size = encode_header([(s.name, s.shape, s.dtype) for s in group], metadata)
    try:
        with open(path, "wb") as f:
            f.write(prefix)
            f.truncate(size)
            for spec in group:  # no reference outlives its write: one tensor alive at a time
                f.seek(offsets[spec.name])
                f.write(_as_bytes(_next_tensor(path, spec, tensors)))
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {first_line(exc)}") from exc


def _as_bytes(arr: np.ndarray) -> memoryview:
    """The C-order bytes of `arr`, without a copy when it is already contiguous."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data


def _next_tensor(path: Path, spec: _Spec, iterator: Iterator) -> np.ndarray:
    try:
        name, arr = next(iterator)
    except StopIteration:
        raise CheckpointError(
            f"writing {path}: tensors ended before {spec.name!r} (fewer tensors than specs)"
        ) from None
    if name != spec.name:
        raise CheckpointError(f"writing {path}: expected tensor {spec.name!r}, got {name!r}")
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">" and arr.dtype.newbyteorder("<") == spec.dtype:
        arr = arr.astype(spec.dtype)
    if arr.shape != spec.shape or arr.dtype != spec.dtype:
        raise CheckpointError(
            f"writing {path}: tensor {name!r} is {arr.dtype}{list(arr.shape)}, "
            f"spec says {spec.dtype}{list(spec.shape)}"
        )
    return arr


def write_safetensors(
    out_dir: Path,
    specs: Iterable[tuple[str, Sequence[int], object]],
    tensors: Iterable[tuple[str, np.ndarray]],
    *,
    max_shard_bytes: int | str | None = None,
    metadata: Mapping[str, str] | None = _PT_METADATA,
    filename_prefix: str = "model",
) -> list[Path]:
    """Stream `tensors` (name, array), in `specs` order, into safetensors files in `out_dir`.

    One `{prefix}.safetensors` when everything fits in `max_shard_bytes` (or no limit);
    otherwise greedy in-order shards `{prefix}-00001-of-0000N.safetensors` plus
    `{prefix}.safetensors.index.json`. Only one tensor is held at a time. Returns the files
    written (shards in order, then the index). On error, the files written so far are removed.
    """
    out_dir = Path(out_dir)
    plan = _normalize_specs(specs)
    limit = None if max_shard_bytes is None else parse_size(max_shard_bytes)
    if limit is not None and limit <= 0:
        raise UserError(f"max_shard_bytes must be positive, got {max_shard_bytes!r}")
    if metadata and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"safetensors metadata must map strings to strings: {metadata!r}")
    groups = _plan_shards(plan, limit)
    n = len(groups)
    if n == 1:
        names = [f"{filename_prefix}.safetensors"]
    else:
        names = [f"{filename_prefix}-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    out_dir.mkdir(parents=True, exist_ok=True)
    iterator = iter(tensors)
    written: list[Path] = []
    try:
        for name, group in zip(names, groups):
            written.append(out_dir / name)
            _write_shard(written[-1], group, iterator, metadata)
        extra = next(iterator, None)
        if extra is not None:
            what = extra[0] if isinstance(extra, tuple) else extra
            raise CheckpointError(f"writing {out_dir}: more tensors than specs (extra {what!r})")
        if n > 1:
            index = {
                "metadata": {
                    "total_size": sum(s.nbytes for s in plan),
                    "total_parameters": sum(math.prod(s.shape) for s in plan),
                },
                "weight_map": {s.name: name for name, g in zip(names, groups) for s in g},
            }
            written.append(out_dir / f"{filename_prefix}.safetensors.index.json")
            text = json.dumps(index, indent=2, sort_keys=True) + "\n"
            try:
                written[-1].write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CheckpointError(f"cannot write {written[-1]}: {first_line(exc)}") from exc
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
