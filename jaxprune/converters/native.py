"""Native checkpoints: the model config as JSON plus the parameters as orbax checkpoints,
one per group (embeddings, each block, final norm, LM head), written and read one group at
a time so that memory stays near the largest group.

    OUT/jaxprune.json        format, version, model config, source family and HF config
    OUT/params/<group>/      orbax StandardCheckpointer of {param path: array}
    OUT/<tokenizer files>
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from jaxprune.config import ModelConfig
from jaxprune.converters.hf_config import encode_json
from jaxprune.converters.rules import group_of
from jaxprune.nn.model import HybridLM
from jaxprune.nn.state import model_from_params, model_params

FORMAT = "jaxprune-native"
META = "jaxprune.json"


def is_native(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def read_meta(path: str | Path) -> tuple[ModelConfig, dict]:
    """(model config, metadata dict with ``family``, ``hf_config``, ``groups``)."""
    p = Path(path) / META
    try:
        meta = json.loads(p.read_text(), object_hook=_decode)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}")
        return ModelConfig.from_dict(meta["model"]), meta
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not a jaxprune checkpoint ({e})") from e


def _decode(obj: dict):
    return float(obj["__float__"]) if set(obj) == {"__float__"} else obj


def write_native(
    out_dir: Path,
    cfg: ModelConfig,
    groups: Iterable[tuple[str, dict[str, np.ndarray]]],
    *,
    family: str | None = None,
    hf_config: dict | None = None,
) -> None:
    """Write into ``out_dir`` (an existing, empty temp dir: see ``atomic_output_dir``)."""
    ckpt = ocp.StandardCheckpointer()
    names = []
    for name, arrays in groups:
        ckpt.save((out_dir / "params" / name).absolute(), _nest(arrays))
        ckpt.wait_until_finished()
        names.append(name)
    meta = {
        "format": FORMAT,
        "version": 1,
        "model": cfg.to_dict(),
        "family": family,
        "hf_config": hf_config,
        "groups": names,
    }
    (out_dir / META).write_text(json.dumps(encode_json(meta), indent=2, allow_nan=False))


def iter_groups(path: str | Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(group name, {param path: numpy array}) for each stored group, one at a time."""
    _, meta = read_meta(path)
    ckpt = ocp.StandardCheckpointer()
    for name in meta["groups"]:
        tree = ckpt.restore((Path(path) / "params" / name).absolute())
        yield name, _flatten(tree)


def _nest(arrays: dict[str, np.ndarray]) -> dict:
    """{"blocks.3.mixer.z_proj": a} -> {"blocks": {"3": {"mixer": {"z_proj": a}}}}."""
    tree: dict = {}
    for path, a in arrays.items():
        node = tree
        *parents, leaf = path.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = np.asarray(a)
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = np.asarray(v)
    return out


def grouped(params: dict[str, np.ndarray]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    groups: dict[str, dict[str, np.ndarray]] = {}
    for k, v in params.items():
        groups.setdefault(group_of(k), {})[k] = v
    yield from groups.items()


def save_model(out_dir: Path, model: HybridLM, **meta) -> None:
    """Write a model (e.g. a pruned one) as a native checkpoint into ``out_dir``."""
    write_native(out_dir, model.config, grouped(model_params(model)), **meta)


def save_native(
    out: str | Path,
    model: HybridLM,
    *,
    family: str | None = None,
    hf_config: dict | None = None,
    aux_dir: str | Path | None = None,
) -> Path:
    """Write ``model`` as a native checkpoint at ``out``, atomically (nothing is left at
    ``out`` on failure), with the tokenizer and other aux files of ``aux_dir``."""
    from jaxprune.atomic import atomic_output_dir
    from jaxprune.converters.fsutil import copy_aux_files

    with atomic_output_dir(Path(out)) as tmp:
        save_model(tmp, model, family=family, hf_config=hf_config)
        if aux_dir is not None:
            copy_aux_files(Path(aux_dir), tmp)
    return Path(out)


def load_native(path: str | Path) -> tuple[HybridLM, dict]:
    cfg, meta = read_meta(path)
    params: dict[str, np.ndarray] = {}
    for _, arrays in iter_groups(path):
        params.update(arrays)
    return model_from_params(cfg, params), meta


__all__ = [
    "is_native",
    "iter_groups",
    "load_native",
    "read_meta",
    "save_model",
    "save_native",
    "write_native",
]
