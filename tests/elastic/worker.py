"""Subprocess entry point of the elastic kill / resume test:

    python -m tests.elastic.worker STEP_DELAY ARGS...

runs ``jaxprune`` ARGS (an ``elastic`` command) with the device setup of the tests and
each step slowed by STEP_DELAY seconds, so that the test can kill it mid-run."""

from __future__ import annotations

import sys
import time

from tests.train.worker import setup_jax


def main() -> int:
    delay, args = float(sys.argv[1]), sys.argv[2:]
    setup_jax(8, None)
    from jaxprune.cli import main as cli
    from jaxprune.train import trainer

    original = trainer._device_batch

    def slow(*a, **kw):
        time.sleep(delay)
        return original(*a, **kw)

    trainer._device_batch = slow
    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
