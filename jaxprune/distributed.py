"""Multi-process (multi-host) start-up: one process per host, all running the same command.

JAX's multi-controller model: :func:`initialize` connects the processes (process 0 is the
coordinator), after which ``jax.devices()`` lists every device of every process and the
trainer's mesh spans them. Where the count and id come from, first match wins:

1. explicit values (``jaxprune --coordinator HOST:PORT --num-processes N --process-id I``);
2. the environment: ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and
   ``JAX_PROCESS_ID``;
3. JAX's cluster detection (SLURM ``srun``, Open MPI ``mpirun``, Kubernetes, Cloud TPU),
   when only ``--distributed`` (or only ``JAX_COORDINATOR_ADDRESS``) is given.

Nothing is initialized unless one of them asks for it, so single-process runs are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from jaxprune.errors import UserError

#: Environment variables that describe a run (besides JAX's own cluster detection).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


@dataclass(frozen=True)
class DistributedConfig:
    """How to join a multi-process run; all None with ``auto`` = JAX's cluster detection."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False

    @property
    def requested(self) -> bool:
        return self.auto or self.coordinator is not None or self.num_processes is not None


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {raw!r}") from None


def resolve(cfg: DistributedConfig, env: Mapping[str, str] | None = None) -> DistributedConfig:
    """``cfg`` completed from the environment and checked (explicit values win)."""
    env = os.environ if env is None else env
    coord = cfg.coordinator or env.get(ENV_COORDINATOR) or None
    n = cfg.num_processes if cfg.num_processes is not None else _int_env(env, ENV_NUM_PROCESSES)
    pid = cfg.process_id if cfg.process_id is not None else _int_env(env, ENV_PROCESS_ID)
    out = DistributedConfig(coord, n, pid, cfg.auto or coord is not None)
    if (n is None) != (pid is None):
        raise UserError(
            "distributed: give both the process count and this process's id (--num-processes "
            f"/ --process-id or {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID}), or neither"
        )
    if n is not None:
        if n < 1 or not 0 <= pid < n:
            raise UserError(f"distributed: process id {pid} is not in [0, {n})")
        if coord is None and n > 1:
            raise UserError(
                f"distributed: {n} processes need a coordinator (--coordinator HOST:PORT or "
                f"{ENV_COORDINATOR})"
            )
    if coord is not None and (":" not in coord or not coord.rsplit(":", 1)[1].isdigit()):
        raise UserError(f"distributed: coordinator must be HOST:PORT, got {coord!r}")
    return out


def initialize(cfg: DistributedConfig, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Join the run ``cfg`` (completed by :func:`resolve`) describes, once per process.
    Returns (process index, process count); (0, 1) without touching JAX's backends when no
    run is requested. CPU processes talk through gloo collectives."""
    cfg = resolve(cfg, env)
    if not cfg.requested:
        return 0, 1
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if cfg.coordinator is not None:
        kwargs["coordinator_address"] = cfg.coordinator
    if cfg.num_processes is not None:
        kwargs.update(num_processes=cfg.num_processes, process_id=cfg.process_id)
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # JAX found no cluster to detect: bad input, not a bug
        raise UserError(f"distributed: {e}") from None
    return jax.process_index(), jax.process_count()


def describe() -> str:
    """One line: this process, the count, and the devices it sees (global and local)."""
    import jax

    return (
        f"distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.device_count()} devices ({jax.local_device_count()} local)"
    )
