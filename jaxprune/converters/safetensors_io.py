"""safetensors without torch: header encoding/decoding and a validating, memory-mapped reader.

Layout: an 8-byte little-endian header length n, n bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [s, e]}, "__metadata__": {...}}`, then the data;
tensor bytes sit at 8 + n + s. The streaming writer built on `encode_header` is in `io`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

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

MAX_HEADER_BYTES = 100_000_000  # the reference library's limit
DTYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        code: np.dtype(t)
        for code, t in {
            "F64": np.float64,
            "F32": np.float32,
            "F16": np.float16,
            "BF16": ml_dtypes.bfloat16,
            "I64": np.int64,
            "I32": np.int32,
            "I16": np.int16,
            "I8": np.int8,
            "U64": np.uint64,
            "U32": np.uint32,
            "U16": np.uint16,
            "U8": np.uint8,
            "BOOL": np.bool_,
            "F8_E4M3": ml_dtypes.float8_e4m3fn,
            "F8_E5M2": ml_dtypes.float8_e5m2,
            "F8_E8M0": ml_dtypes.float8_e8m0fnu,
        }.items()
    }
)
CODES: Mapping[np.dtype, str] = MappingProxyType({dt: code for code, dt in DTYPES.items()})


def _bad(path: Path, msg: str) -> CheckpointError:
    return CheckpointError(f"{path}: {msg}")


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, int], dict[str, str]]:
    """Parse and validate a safetensors header: ({name: info}, {name: data start}, metadata)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            if size < 8:
                raise _bad(path, f"truncated: {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", f.read(8))
            if n < 2 or n > MAX_HEADER_BYTES:
                raise _bad(path, f"header length {n} is invalid (corrupt or not safetensors)")
            if 8 + n > size:
                raise _bad(path, f"truncated: header needs {8 + n} bytes, file has {size}")
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except OSError as exc:
        raise _bad(path, f"cannot read: {first_line(exc)}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"header is not valid JSON ({first_line(exc)})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad(path, "__metadata__ must map strings to strings")
    infos: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        info, start, end = _parse_entry(path, name, entry)
        infos[name] = info
        spans.append((start, end, name))
    spans.sort()
    prev_end, prev_name = 0, ""
    for start, end, name in spans:
        if start < prev_end and end > start:
            raise _bad(path, f"tensor {name!r} overlaps tensor {prev_name!r}")
        if end > prev_end:
            prev_end, prev_name = end, name
    if 8 + n + prev_end > size:
        raise _bad(
            path, f"truncated: data needs {8 + n + prev_end} bytes, file has {size} ({prev_name!r})"
        )
    return infos, {name: 8 + n + s for s, _, name in spans}, metadata


def _parse_entry(path: Path, name: str, entry: object) -> tuple[TensorInfo, int, int]:
    if not isinstance(entry, dict):
        raise _bad(path, f"tensor {name!r}: header entry is not an object")
    code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    dtype = DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        raise _bad(path, f"tensor {name!r}: unsupported dtype {code!r}")

    def is_count(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if not isinstance(shape, list) or not all(map(is_count, shape)):
        raise _bad(path, f"tensor {name!r}: invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_count, offsets))):
        raise _bad(path, f"tensor {name!r}: invalid data_offsets {offsets!r}")
    info = TensorInfo(tuple(shape), dtype, path)
    start, end = offsets
    if end - start != info.nbytes:
        raise _bad(
            path,
            f"tensor {name!r}: data_offsets {offsets} span {end - start} bytes but shape "
            f"{shape} of {code} needs {info.nbytes}",
        )
    return info, start, end


class SafetensorsReader(Reader):
    """One or more safetensors files (optionally through an index); tensors are `np.memmap`s."""

    def __init__(
        self,
        path: Path,
        infos: Mapping[str, TensorInfo],
        starts: Mapping[str, int],
        files: list[Path],
        metadata: dict[str, str],
    ) -> None:
        super().__init__(path, infos, files)
        self._starts = dict(starts)
        self.metadata = metadata

    @classmethod
    def from_files(cls, files: Sequence[Path], path: Path | None = None) -> SafetensorsReader:
        """Read `files` as one checkpoint; a tensor name in two files is an error."""
        files = [Path(p) for p in files]
        infos: dict[str, TensorInfo] = {}
        starts: dict[str, int] = {}
        metadata: dict[str, str] | None = None
        for file in files:
            file_infos, file_starts, file_meta = read_header(file)
            for name in file_infos:
                if name in infos:
                    raise CheckpointError(
                        f"tensor {name!r} is in both {infos[name].file} and {file}"
                    )
            infos.update(file_infos)
            starts.update(file_starts)
            metadata = file_meta if metadata is None else metadata
        return cls(path or files[0], infos, starts, files, metadata or {})

    @classmethod
    def from_index(cls, index: Path) -> SafetensorsReader:
        """Read a sharded checkpoint through its `*.safetensors.index.json`."""
        weight_map = read_weight_map(index)
        files = sorted(set(weight_map.values()))
        headers = {file: read_header(file) for file in files}
        infos = check_placement(index, weight_map, {f: h[0] for f, h in headers.items()})
        starts = {name: headers[info.file][1][name] for name, info in infos.items()}
        return cls(index, infos, starts, files, headers[files[0]][2])

    def _load(self, name: str, info: TensorInfo) -> np.ndarray:
        if info.nbytes == 0:
            empty = np.empty(info.shape, info.dtype)
            empty.flags.writeable = False
            return empty
        try:
            offset = self._starts[name]
            return np.memmap(info.file, dtype=info.dtype, mode="r", offset=offset, shape=info.shape)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot read tensor {name!r} from {info.file}: {first_line(exc)}"
            ) from None


def encode_header(
    entries: Sequence[tuple[str, tuple[int, ...], np.dtype]], metadata: Mapping[str, str] | None
) -> tuple[bytes, dict[str, int], int]:
    """(8-byte length + padded JSON header, {name: absolute data offset}, file size) for entries.

    The data is laid out by decreasing itemsize (stable), so every tensor is aligned to its
    itemsize as in the reference library; the header is padded with spaces to 8 bytes.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offsets: dict[str, int] = {}
    pos = 0
    for name, shape, dtype in sorted(entries, key=lambda e: -e[2].itemsize):
        end = pos + math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [pos, end]}
        offsets[name], pos = pos, end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    base = 8 + len(raw)
    return struct.pack("<Q", len(raw)) + raw, {k: base + v for k, v in offsets.items()}, base + pos
