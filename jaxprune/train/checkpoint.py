"""Training checkpoints (orbax) and the final model written into the run directory.

    OUT/checkpoints/<step>/{state, meta, data}   train state, JSON metadata, grain iterator
    OUT/jaxprune.json + OUT/params/              the final model (a native checkpoint)

Orbax writes each step into a temporary directory and renames it when complete, so a step
directory either is whole or is ignored (and ``keep`` bounds how many are kept). Saves are
asynchronous: :meth:`Checkpoints.save` returns once the arrays are copied off the devices.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from jaxprune.atomic import publish_into
from jaxprune.config import ModelConfig
from jaxprune.converters.fsutil import copy_aux_files
from jaxprune.converters.native import META, save_model
from jaxprune.nn.state import flat_state, model_from_params


class Checkpoints:
    """An orbax ``CheckpointManager`` over {train state, metadata, data iterator}."""

    def __init__(self, directory: Path, *, keep: int, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, meta: dict, data_iter: Any) -> None:
        """Start saving ``state`` (arrays), ``meta`` (JSON) and the iterator position."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave(meta),
            data=grain.checkpoint.CheckpointSave(data_iter),
        )
        self.manager.save(step, args=args, force=True)

    def restore(
        self, step: int, abstract: dict, shardings: dict, data_iter: Any
    ) -> tuple[dict, dict]:
        """(state placed on ``shardings``, meta); ``data_iter`` is moved to the saved position."""
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                meta=ocp.args.JsonRestore(),
                data=grain.checkpoint.CheckpointRestore(data_iter),
            ),
        )
        return out["state"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def host_tree(tree):
    """Every leaf as a host numpy array (gathered across processes when needed)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def export_model(
    out: Path,
    params: nnx.State,
    rest: nnx.State,
    cfg: ModelConfig,
    *,
    family: str | None = None,
    hf_config: dict | None = None,
    aux_dir: Path | None = None,
) -> None:
    """Write the trained model into ``out`` as a native checkpoint (``out/jaxprune.json`` +
    ``out/params``) next to ``out/checkpoints``. Parameters are cast to ``cfg.param_dtype``.

    The parameters go to ``out/.final.tmp`` first and are published into ``out`` with
    ``jaxprune.json`` (which makes ``out`` a model) last (`jaxprune.atomic.publish_into`), so
    an interrupted export never leaves a half model. Every process calls this (orbax writes
    collectively); process 0 moves the files.
    """
    out = Path(out)
    tmp = out / ".final.tmp"
    host = host_tree((params, rest))
    model = model_from_params(cfg, flat_state(*host), host=True)
    primary = jax.process_index() == 0
    if primary:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier("jaxprune_export_start")
    save_model(tmp, model, family=family, hf_config=hf_config)
    _barrier("jaxprune_export_written")
    if primary:
        if aux_dir is not None and Path(aux_dir).is_dir():
            copy_aux_files(Path(aux_dir), tmp)
        publish_into(tmp, out, last=META)
    _barrier("jaxprune_export_done")


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
