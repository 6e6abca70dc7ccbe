"""Subprocess entry point for the kill / resume and multi-process tests.

    python -m tests.train.worker OUT [--resume] [--step-delay S] [--steps N]
        [--process-id I --num-processes P --coordinator HOST:PORT --local-devices D]

Runs :func:`jaxprune.testing.train.distill` (a fixed tiny distillation) and writes
``OUT/result.json`` with the final train loss when it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def setup_jax(local_devices: int, distributed: dict | None) -> None:
    """The device setup of ``tests/conftest.py`` (or a process of a distributed run)."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
    import jax

    jax.config.update("jax_num_cpu_devices", local_devices)
    jax.config.update("jax_default_prng_impl", "rbg")
    if distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**distributed)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--step-delay", type=float, default=0.0)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--coordinator", default=None)
    p.add_argument("--local-devices", type=int, default=8)
    p.add_argument("--mesh", default="2,2,1")
    args = p.parse_args()
    dist = None
    if args.process_id is not None:
        dist = {
            "coordinator_address": args.coordinator,
            "num_processes": args.num_processes,
            "process_id": args.process_id,
        }
    setup_jax(args.local_devices, dist)
    from jaxprune.testing.train import distill  # imports jax: after setup_jax

    if args.step_delay:
        from jaxprune.train import trainer

        original = trainer._device_batch

        def slow(*a, **kw):
            time.sleep(args.step_delay)
            return original(*a, **kw)

        trainer._device_batch = slow
    mesh = tuple(int(x) for x in args.mesh.split(","))
    result = distill(args.out, steps=args.steps, resume=args.resume, mesh=mesh)
    import jax

    if jax.process_index() == 0:
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(
                {"status": result.status, "step": result.step, "loss": result.train["loss"]}, f
            )


if __name__ == "__main__":
    main()
