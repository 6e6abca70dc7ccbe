"""Device timing for the GPU check (METHOD.md): warm-up outside the numbers, synchronised
calls, several input sets rotated so repeated calls do not time the cache, the variants
interleaved round by round (A B A B ...) so each one's spread across rounds is visible, and
the measured copy / matmul ceilings the rates are shown against."""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Call = Callable[[int], Any]  # input-set index -> output (async)
Sync = Callable[[Any], Any]


def _one(fn: Call, sync: Sync, i: int) -> float:
    t0 = time.perf_counter()
    sync(fn(i))
    return time.perf_counter() - t0


def time_interleaved(
    calls: dict[str, tuple[Call, Sync]], *, rounds: int, reps: int, warmup: int, sets: int
) -> dict[str, dict]:
    """{name: {"ms", "best_ms", "round_ms", "spread", "first_call_s"} or {"error"}}.

    Each call is warmed up (``warmup`` calls; the first, compile included, is reported as
    ``first_call_s``), then ``rounds`` rounds each time ``reps`` calls of every variant in
    turn, cycling through ``sets`` input sets. ``ms`` is the median of all calls; ``spread``
    is (max - min) / min of the per-round medians (the same version timed several times)."""
    out: dict[str, dict] = {}
    live = {}
    for name, (fn, sync) in calls.items():
        try:
            first = _one(fn, sync, 0)
            for w in range(1, warmup):
                _one(fn, sync, w % sets)
        except Exception as err:  # out of memory, unsupported: record it and go on
            out[name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            out[name]["traceback"] = traceback.format_exc(limit=8)
            continue
        out[name] = {"first_call_s": first}
        live[name] = (fn, sync, [])
    for r in range(rounds):
        for fn, sync, per_round in live.values():
            per_round.append([_one(fn, sync, (r * reps + k) % sets) for k in range(reps)])
    for name, (_, _, per_round) in live.items():
        flat = [t for rnd in per_round for t in rnd]
        meds = [statistics.median(rnd) for rnd in per_round]
        out[name].update(
            ms=1e3 * statistics.median(flat),
            best_ms=1e3 * min(flat),
            round_ms=[1e3 * m for m in meds],
            spread=(max(meds) - min(meds)) / min(meds),
        )
    return out


def ceilings(on_gpu: bool) -> dict:
    """Measured device-to-device copy (GB/s, bytes read + written) and bf16 matmul rate
    (TFLOP/s), on random data, median of interleaved calls."""
    n = (1 << 30) if on_gpu else (1 << 22)  # bf16 elements: 2 GiB / 8 MiB (several x L2)
    m = 8192 if on_gpu else 512
    key = jax.random.key(0)
    vecs = [jax.random.normal(jax.random.fold_in(key, i), (n,), jnp.bfloat16) for i in range(2)]
    mats = [jax.random.normal(jax.random.fold_in(key, 9 + i), (m, m), jnp.bfloat16) for i in (0, 1)]
    copy = jax.jit(lambda v: v * 1.5)
    mm = jax.jit(lambda u, v: jnp.dot(u, v, preferred_element_type=jnp.bfloat16))
    reps = 10 if on_gpu else 3
    res = time_interleaved(
        {
            "copy": (lambda i: copy(vecs[i]), jax.block_until_ready),
            "matmul": (lambda i: mm(mats[i], mats[1 - i]), jax.block_until_ready),
        },
        rounds=2,
        reps=reps,
        warmup=2,
        sets=2,
    )
    return {
        "copy_GBps": 2 * 2 * n / (res["copy"]["ms"] / 1e3) / 1e9,
        "matmul_TFLOPs": 2 * m**3 / (res["matmul"]["ms"] / 1e3) / 1e12,
        "copy_spread": res["copy"]["spread"],
        "matmul_spread": res["matmul"]["spread"],
    }


def rate(flops: float, ms: float | None) -> float | None:
    """TFLOP/s of ``flops`` done in ``ms``."""
    return None if not ms else flops / (ms / 1e3) / 1e12
