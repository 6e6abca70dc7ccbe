"""Calibration cost against a plain forward on the same model and batch.

    python experiments/bench_calibration.py [--preset bench-10m] [--batch 4] [--seq-len 512]

Times (best of ``--reps``, compiled) the jitted forward (logits) and the jitted calibration
step (forward + every importance statistic reduced on the fly) and prints tokens/s and the
overhead ratio (the target is < 1.3x).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.nn.model import init_model
from jaxprune.presets import get_preset
from jaxprune.pruning.importance import make_stats_fn


def best(fn, reps: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="bench-10m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    model = init_model(get_preset(args.preset), 0)
    graphdef, state = nnx.split(model)
    tokens = jax.random.randint(
        jax.random.key(0), (args.batch, args.seq_len), 0, model.config.vocab_size
    )
    valid = jnp.ones(tokens.shape, bool)
    fwd = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    stats = make_stats_fn(model)
    t_fwd = best(lambda: fwd(state, tokens), args.reps)
    t_cal = best(lambda: stats(state, tokens, valid), args.reps)
    n = args.batch * args.seq_len
    print(
        f"| {args.preset} b={args.batch} T={args.seq_len} | forward {n / t_fwd:,.0f} tok/s "
        f"({t_fwd:.3f} s) | calibration {n / t_cal:,.0f} tok/s ({t_cal:.3f} s) | "
        f"overhead {t_cal / t_fwd:.2f}x |"
    )


if __name__ == "__main__":
    main()
