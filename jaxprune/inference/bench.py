"""Generation benchmark: prefill and decode throughput, time to first token, cache size and
peak memory of one or more models over prompt lengths and batch sizes."""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.counts import count_params
from jaxprune.dmc.measure import cache_compression
from jaxprune.errors import UserError
from jaxprune.inference.generate import decode_loop, make_picker, prefill
from jaxprune.nn.model import HybridLM

#: Metrics compared against the first model (``<metric>_ratio`` columns).
RATIO_KEYS = (
    "prefill_tok_s",
    "decode_tok_s",
    "ttft_s",
    "cache_bytes_per_seq",
    "peak_bytes",
)


def _peak_estimate(compiled) -> int | None:
    """Arguments + outputs + temporaries - aliased (donated) buffers of a compiled call."""
    ma = compiled.memory_analysis()
    if ma is None:
        return None
    return int(
        ma.argument_size_in_bytes
        + ma.output_size_in_bytes
        + ma.temp_size_in_bytes
        - ma.alias_size_in_bytes
    )


def _device_peak() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


def _timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def bench_one(
    model: HybridLM,
    *,
    prompt_len: int,
    batch: int,
    gen_len: int,
    repeats: int = 2,
    seed: int = 0,
    prompt: jax.Array | None = None,
) -> dict:
    """Time greedy generation of ``gen_len`` tokens after ``prompt`` (batch, prompt_len)
    token ids (default: random ones).

    Prefill (with the first token's sampling) is the time to first token; decoding is the
    jitted ``lax.scan`` over the other ``gen_len - 1`` steps. Both are compiled first (not
    timed) and the best of ``repeats`` runs is kept. ``peak_bytes``: the larger of the two
    compiled functions' footprints (arguments + outputs + temporaries, XLA's estimate);
    ``device_peak_bytes``: the device allocator's process-wide peak where it reports one.
    A model with DMC blocks decodes with its buffers cut after the prefill to the slots it
    can still use (:meth:`~jaxprune.nn.cache.Cache.fit_dmc`; the KV bytes are of that
    cache) and also reports ``kv_compression`` (tokens per slot per block and head) and
    ``kv_used_bytes_per_seq`` (bytes of the slots actually used).
    """
    if min(prompt_len, batch, gen_len, repeats) < 1:
        raise UserError("bench: prompt length, batch, gen length and repeats must be >= 1")
    graphdef, state = nnx.split(model)
    pick = make_picker()
    max_len = prompt_len + gen_len
    if prompt is None:
        prompt = jax.random.randint(
            jax.random.key(seed), (batch, prompt_len), 0, model.config.vocab_size, jnp.int32
        )
    elif tuple(prompt.shape) != (batch, prompt_len):
        raise UserError(f"bench: prompt shape {tuple(prompt.shape)} != ({batch}, {prompt_len})")
    prompt = jnp.asarray(prompt, jnp.int32)
    key = jax.random.key(seed + 1)
    keys = jax.random.split(key, max(gen_len - 1, 1))[: gen_len - 1]

    def pre(s, p, c, k):
        return prefill(nnx.merge(graphdef, s), p, c, k, pick)

    def loop(s, t, c, ks):
        return decode_loop(nnx.merge(graphdef, s), t, c, ks, pick)

    def new_cache():
        return model.init_cache(batch, max_len)

    cache = new_cache()
    pre_c = jax.jit(pre, donate_argnums=2).lower(state, prompt, cache, key).compile()
    tok, cache = pre_c(state, prompt, new_cache(), key)
    cache = cache.fit_dmc(gen_len - 1)  # DMC blocks: buffers cut to the slots they can use
    loop_c = jax.jit(loop, donate_argnums=2).lower(state, tok, cache, keys).compile()
    fitted = {k: v // batch for k, v in cache.nbytes().items()}
    ttft = decode = float("inf")
    for _ in range(repeats):
        t_pre, (tok, cache) = _timed(pre_c, state, prompt, new_cache(), key)
        t_dec, (_, cache) = _timed(loop_c, state, tok, cache.fit_dmc(gen_len - 1), keys)
        ttft, decode = min(ttft, t_pre), min(decode, t_dec)
    dmc = cache_compression(cache)
    nbytes = fitted if dmc is not None else model.init_cache(1, max_len).nbytes()
    peaks = [p for p in (_peak_estimate(pre_c), _peak_estimate(loop_c)) if p is not None]
    steps = gen_len - 1
    return {
        "prompt_len": prompt_len,
        "batch": batch,
        "gen_len": gen_len,
        "params": count_params(model.config)["total"],
        "ttft_s": ttft,
        "prefill_tok_s": batch * prompt_len / ttft,
        "decode_tok_s": batch * steps / decode if steps else None,
        "cache_bytes_per_seq": sum(nbytes.values()),
        "kv_bytes_per_seq": nbytes["kv"],
        "ssm_bytes_per_seq": nbytes["ssm"] + nbytes["conv"],
        "peak_bytes": max(peaks) if peaks else None,
        "device_peak_bytes": _device_peak(),
        # DMC blocks: the slots actually used (what a paged cache would hold) and the
        # tokens per slot per block and KV head, after the last timed generation
        "kv_used_bytes_per_seq": None if dmc is None else dmc["used_bytes"] // batch,
        "kv_compression": dmc,
    }


def add_ratios(rows: list[dict]) -> list[dict]:
    """Add ``<metric>_ratio`` = value / the first model's value at the same (prompt_len,
    batch) to every row (rows carry ``model``; the first model is the first row's)."""
    first = rows[0]["model"] if rows else None
    base = {(r["prompt_len"], r["batch"]): r for r in rows if r["model"] == first}
    for r in rows:
        ref = base.get((r["prompt_len"], r["batch"]))
        for k in RATIO_KEYS:
            a, b = r.get(k), None if ref is None else ref.get(k)
            r[f"{k}_ratio"] = a / b if a is not None and b else None
    return rows


def run_bench(
    models: Sequence[tuple[str, HybridLM]],
    *,
    prompt_lens: Sequence[int],
    batches: Sequence[int],
    gen_len: int,
    repeats: int = 2,
    progress=None,
) -> dict:
    """Benchmark each (name, model) at every prompt length and batch size.

    Returns ``{"device": ..., "backend": ..., "rows": [...]}``; each row is
    :func:`bench_one`'s dict plus ``model`` and the ratios against the first model.
    ``progress(row)`` is called after each measurement.
    """
    if not models:
        raise UserError("bench: no models")
    rows = []
    for name, model in models:
        for t in prompt_lens:
            for b in batches:
                row = {
                    "model": name,
                    **bench_one(model, prompt_len=t, batch=b, gen_len=gen_len, repeats=repeats),
                }
                rows.append(row)
                if progress is not None:
                    progress(row)
    dev = jax.devices()[0]
    return {
        "device": getattr(dev, "device_kind", str(dev)),
        "backend": jax.default_backend(),
        "rows": add_ratios(rows),
    }
