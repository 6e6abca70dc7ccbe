"""High-level conversion: HF / PyTorch directory <-> native checkpoint <-> HF directory.

Every check that can fail (config, key accounting, shapes) runs before anything is written,
and outputs go through ``atomic_output_dir``, so a failed or interrupted conversion leaves
nothing at OUT and never touches the source.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxprune.config import ModelConfig
from jaxprune.converters.families import check_family, family_module
from jaxprune.converters.fsutil import CheckpointError, atomic_output_dir, copy_aux_files
from jaxprune.converters.hf_config import (
    apply_extras,
    infer_model_type,
    read_hf_config,
    with_extras,
    write_hf_config,
)
from jaxprune.converters.io import open_checkpoint, write_safetensors
from jaxprune.converters.native import (
    grouped,
    is_native,
    iter_groups,
    load_native,
    read_meta,
    write_native,
)
from jaxprune.converters.rules import Rule, to_hf, to_native
from jaxprune.converters.rules import iter_groups as rule_groups
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM
from jaxprune.nn.state import model_from_params, model_params

#: HF tensors that carry no model state we use (MTP heads, rotary caches).
IGNORED = re.compile(r"(^|\.)(mtp\.|rotary_emb\.inv_freq$)|^mtp\.")
_FUSED = re.compile(r"^(?P<prefix>.*\.experts)\.(?P<proj>gate_up_proj|up_proj|down_proj)$")
DTYPES = {
    "fp32": np.dtype(np.float32),
    "float32": np.dtype(np.float32),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


class _ExpertView:
    """Exposes fused 3-D expert tensors (``experts.up_proj`` (E, F, d), Qwen's
    ``experts.gate_up_proj`` (E, 2F, d)) under their per-expert names."""

    def __init__(self, reader):
        self.reader = reader
        self.virtual: dict[str, tuple[str, int, slice | None]] = {}
        for name in reader.keys():  # noqa: SIM118 (a Reader, not a dict)
            m = _FUSED.match(name)
            shape = reader.shape(name)
            if not m or len(shape) != 3:
                continue
            pre = m["prefix"]
            for j in range(shape[0]):
                if m["proj"] == "gate_up_proj":
                    half = shape[1] // 2
                    self.virtual[f"{pre}.{j}.gate_proj.weight"] = (name, j, slice(0, half))
                    self.virtual[f"{pre}.{j}.up_proj.weight"] = (name, j, slice(half, None))
                else:
                    self.virtual[f"{pre}.{j}.{m['proj']}.weight"] = (name, j, None)
        self.fused = {src for src, _, _ in self.virtual.values()}

    def keys(self) -> set[str]:
        return (set(self.reader.keys()) - self.fused) | set(self.virtual)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.virtual:
            src, _, sl = self.virtual[name]
            shape = self.reader.shape(src)[1:]
            return (shape[0] if sl is None else shape[0] // 2, *shape[1:])
        return tuple(self.reader.shape(name))

    def get(self, name: str) -> np.ndarray:
        if name in self.virtual:
            src, j, sl = self.virtual[name]
            a = self.reader.get(src)[j]
            return a if sl is None else a[sl]
        return self.reader.get(name)


def _validate(view: _ExpertView, rules: list[Rule], src: Path) -> None:
    """Key accounting and shapes, from the headers only (no tensor data read)."""
    have = view.keys()
    want = {r.hf for r in rules}
    missing = sorted(want - have)
    unused = sorted(k for k in have - want if not IGNORED.search(k))
    if missing:
        raise CheckpointError(f"{src}: {len(missing)} tensors missing, e.g. {missing[:3]}")
    if unused:
        raise CheckpointError(
            f"{src}: {len(unused)} tensors not used by the config, e.g. {unused[:3]}"
        )
    for r in rules:
        shape = view.shape(r.hf)
        if tuple(shape) != r.hf_shape:
            raise CheckpointError(
                f"{src}: tensor {r.hf} has shape {tuple(shape)}, config.json implies {r.hf_shape}"
            )


def _hf_groups(view, rules: list[Rule], cfg: ModelConfig, dtype) -> Iterator[tuple[str, dict]]:
    """Native parameter groups built from HF tensors, one group in memory at a time."""
    experts = {
        f"blocks.{i}.mixer": getattr(layer, "num_experts", None)
        for i, layer in enumerate(cfg.layers)
    }
    for group, rs in rule_groups(rules):
        arrays: dict[str, np.ndarray] = {}
        for r in rs:
            w = view.get(r.hf)
            parts = to_native(r, w if dtype is None else w.astype(dtype))
            for p, a in zip(r.parts, parts, strict=True):
                if r.expert is None:
                    arrays[p.path] = a
                    continue
                if p.path not in arrays:
                    e = experts[p.path.rsplit(".", 1)[0]]
                    arrays[p.path] = np.empty((e, *p.shape), a.dtype)
                arrays[p.path][r.expert] = a
        yield group, arrays


def read_hf(src: str | Path) -> tuple[ModelConfig, str, dict, list[Rule]]:
    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a directory (expected an HF model directory)")
    hf = read_hf_config(src)
    model_type = hf.get("model_type")
    fam = family_module(model_type)
    cfg = apply_extras(fam.config_from_hf(hf), hf)
    return cfg, model_type, hf, fam.rules(cfg)


def load_hf(src: str | Path, *, dtype=None) -> tuple[HybridLM, dict]:
    """An HF / PyTorch model directory as a native model (and metadata)."""
    cfg, model_type, hf, rules = read_hf(src)
    with open_checkpoint(src) as reader:
        view = _ExpertView(reader)
        _validate(view, rules, Path(src))
        params: dict[str, np.ndarray] = {}
        for _, arrays in _hf_groups(view, rules, cfg, dtype):
            params.update(arrays)
    return model_from_params(cfg, params), {"family": model_type, "hf_config": hf}


def convert(src: str | Path, out: str | Path, *, dtype: str | None = None) -> Path:
    """HF / PyTorch directory -> native checkpoint at ``out`` (tokenizer files copied)."""
    cfg, model_type, hf, rules = read_hf(src)
    np_dtype = None if dtype is None else _dtype(dtype)
    with open_checkpoint(src) as reader:
        view = _ExpertView(reader)
        _validate(view, rules, Path(src))
        with atomic_output_dir(Path(out)) as tmp:
            write_native(
                tmp, cfg, _hf_groups(view, rules, cfg, np_dtype), family=model_type, hf_config=hf
            )
            copy_aux_files(Path(src), tmp)
    return Path(out)


def load_model(path: str | Path) -> tuple[HybridLM, dict]:
    """A native checkpoint or an HF directory, detected, and its metadata (``family``,
    ``hf_config``). The low-level loader: :func:`jaxprune.models.resolve_model` resolves
    every kind of model spec (and its tokenizer) through it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: not found")
    if is_native(path):
        return load_native(path)
    if (path / "config.json").is_file():
        return load_hf(path)
    raise CheckpointError(f"{path}: neither a jaxprune checkpoint nor an HF model directory")


def export(
    src: str | Path | HybridLM,
    out: str | Path,
    *,
    dtype: str = "fp32",
    shard_size: int | None = None,
    model_type: str | None = None,
    meta: dict | None = None,
    aux_dir: str | Path | None = None,
    per_layer_mlp: bool = False,
) -> Path:
    """A native checkpoint (path) or an in-memory model -> an HF directory at ``out``.

    The HF config starts from the source's original config (when known) with every width
    and count replaced. Raises UserError if the model cannot be expressed as ``model_type``
    for transformers (e.g. per-layer widths that differ). ``per_layer_mlp`` (Nemotron-H only)
    writes per-layer MLP widths as a list, a form vLLM reads but transformers cannot.
    """
    np_dtype = _dtype(dtype)
    if isinstance(src, HybridLM):
        cfg, meta = src.config, dict(meta or {})
        in_memory = dict(grouped(model_params(src)))
        order = list(in_memory)
        groups = lambda: iter(in_memory.items())  # noqa: E731
    else:
        src = Path(src)
        if not is_native(src):
            raise CheckpointError(f"{src}: not a jaxprune checkpoint (convert it first)")
        cfg, meta = read_meta(src)
        order = list(meta["groups"])
        groups = lambda: iter_groups(src)  # noqa: E731
        aux_dir = aux_dir or src
    model_type = model_type or meta.get("family") or infer_model_type(cfg)
    family_module(model_type)
    options = {}
    if per_layer_mlp:
        if model_type != "nemotron_h":
            raise UserError(
                f"per-layer MLP widths can only be written for nemotron_h, not {model_type}"
            )
        options["per_layer_mlp"] = True
    fam = check_family(cfg, model_type, meta.get("family"))
    fam.check_exportable(cfg, model_type, **options)
    template = meta.get("hf_config") if meta.get("family") == model_type else None
    hf = with_extras(fam.config_to_hf(cfg, template, model_type, **options), cfg)
    hf["dtype"] = "bfloat16" if np_dtype == DTYPES["bf16"] else "float32"
    hf.pop("torch_dtype", None)
    by_group = dict(rule_groups(fam.rules(cfg)))
    if set(by_group) - set(order):
        raise CheckpointError(
            f"checkpoint lacks parameter groups {sorted(set(by_group) - set(order))[:3]}"
        )
    rules = [r for g in order for r in by_group.get(g, [])]
    specs = [(r.hf, r.hf_shape, np_dtype) for r in rules]
    with atomic_output_dir(Path(out)) as tmp:
        write_safetensors(
            tmp, specs, _hf_tensors(groups(), by_group, np_dtype), max_shard_bytes=shard_size
        )
        write_hf_config(hf, tmp / "config.json")
        if aux_dir is not None:
            copy_aux_files(Path(aux_dir), tmp)
    return Path(out)


def _hf_tensors(groups, by_group: dict[str, list[Rule]], dtype) -> Iterator[tuple[str, np.ndarray]]:
    """HF tensors group by group in the stored order, one native group in memory at a time."""
    for group, arrays in groups:
        for r in by_group.get(group, []):
            parts = [
                arrays[p.path] if r.expert is None else arrays[p.path][r.expert] for p in r.parts
            ]
            yield r.hf, to_hf(r, parts).astype(dtype, copy=False)


def _dtype(name: str) -> np.dtype:
    if name not in DTYPES:
        raise UserError(f"unsupported dtype {name!r}; use fp32 or bf16")
    return DTYPES[name]
