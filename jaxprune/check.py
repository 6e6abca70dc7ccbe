"""The built-in job behind ``jaxprune check``: build, verify, generate and time a model."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.config import ModelConfig
from jaxprune.counts import count_params
from jaxprune.inference import make_generate
from jaxprune.nn.model import init_model
from jaxprune.ops.loss import token_nll


def run_check(
    cfg: ModelConfig, *, batch: int, seq_len: int, new_tokens: int, seed: int = 0
) -> dict:
    """Build ``cfg`` with random weights and check, on random tokens (b, seq_len):

    - prefill-then-decode logits equal the full forward (cached inference is exact);
    - changing token t never changes logits before t (causality);
    - greedy generation equals the argmax of the full forward;
    - gradients of the LM loss are finite.
    Returns a JSON-ready report with parameter counts and throughput.
    """
    model = init_model(cfg, seed)
    graphdef, state = nnx.split(model)
    key = jax.random.key(seed + 1)
    tokens = jax.random.randint(key, (batch, seq_len), 0, cfg.vocab_size)
    forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    step = jax.jit(lambda s, t, c: nnx.merge(graphdef, s).step(t, c))
    full = forward(state, tokens)
    checks = {}

    half = seq_len // 2 or 1
    logits, cache = step(state, tokens[:, :half], model.init_cache(batch, seq_len))
    parts = [logits]
    for t in range(half, seq_len):
        logits, cache = step(state, tokens[:, t : t + 1], cache)
        parts.append(logits)
    err = float(jnp.max(jnp.abs(jnp.concatenate(parts, 1) - full)))
    scale = float(jnp.max(jnp.abs(full)))
    checks["cached decoding == full forward"] = _check(
        err <= 1e-4 * max(scale, 1.0), f"max |diff| {err:.2e}"
    )

    t = seq_len // 2
    other = tokens.at[:, t].set((tokens[:, t] + 1) % cfg.vocab_size)
    diff = float(jnp.max(jnp.abs(forward(state, other)[:, :t] - full[:, :t]))) if t else 0.0
    checks["causality"] = _check(diff == 0.0, f"max |diff| before t={t}: {diff:.1e}")

    gen = make_generate(model, new_tokens)
    new = gen(state, tokens, key)
    seq = jnp.concatenate([tokens, new], 1)
    ref = jnp.argmax(forward(state, seq[:, :-1])[:, seq_len - 1 :], -1)
    agree = float(jnp.mean(ref == new))
    checks["greedy generation == argmax of forward"] = _check(
        agree == 1.0, f"{agree:.1%} tokens agree"
    )

    _, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        lg = nnx.merge(graphdef, p, rest)(tokens[:, :-1])
        return jnp.mean(token_nll(lg, tokens[:, 1:]))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    finite = bool(np.isfinite(float(value))) and all(
        bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)
    )
    checks["finite loss and gradients"] = _check(finite, f"loss {float(value):.4f} nats")

    return {
        "name": cfg.name,
        "pattern": cfg.pattern,
        "params": count_params(cfg),
        "batch": batch,
        "checks": checks,
        "ok": all(c["ok"] for c in checks.values()),
        "timing": _timing(forward, gen, state, tokens, key, new_tokens),
        "cache_bytes": model.init_cache(1, seq_len + new_tokens).nbytes(),
        "sample": np.asarray(new[0, :8]).tolist(),
    }


def _check(ok: bool, detail: str) -> dict:
    return {"ok": bool(ok), "detail": detail}


def _timing(forward, gen, state, tokens, key, new_tokens: int, reps: int = 3) -> dict:
    """Best-of-``reps`` wall time of compiled calls (compilation excluded)."""

    def best(fn) -> float:
        fn().block_until_ready()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn().block_until_ready()
            times.append(time.perf_counter() - t0)
        return min(times)

    b, t = tokens.shape
    fwd = best(lambda: forward(state, tokens))
    total = best(lambda: gen(state, tokens, key))
    decode = max(total - fwd, 1e-9)  # generation = one prefill + (new_tokens - 1) decodes
    return {
        "forward_tokens_per_s": b * t / fwd,
        "decode_tokens_per_s": b * max(new_tokens - 1, 1) / decode,
    }
