"""GPU check section: causal GQA attention at 8k, `jaxprune.ops.attention.dot_product_attention`
with each impl (cuDNN, the XLA reference, the blockwise online-softmax version): values against
the reference and forward / forward+backward timings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.gpu_timing import rate, time_interleaved

IMPLS = ("cudnn", "reference", "blockwise")
GPU_ONLY = ("cudnn",)


def plan(dry: bool) -> dict:
    """Nemotron-H-8B attention (32 q / 8 kv heads x 128) at T = 8192, bf16, b = 1; a dry run
    T = 256, 4 / 2 heads x 32, fp32."""
    if dry:
        return {"b": 1, "T": 256, "Hq": 4, "Hkv": 2, "D": 32, "dtype": "float32"}
    return {"b": 1, "T": 8192, "Hq": 32, "Hkv": 8, "D": 128, "dtype": "bfloat16"}


def _inputs(p: dict, seed: int) -> dict:
    ks = jax.random.split(jax.random.key(seed), 3)
    dt = jnp.dtype(p["dtype"])
    b, t = p["b"], p["T"]
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    return {
        "q": jax.random.normal(ks[0], (b, t, p["Hq"], p["D"]), dt),
        "k": jax.random.normal(ks[1], (b, t, p["Hkv"], p["D"]), dt),
        "v": jax.random.normal(ks[2], (b, t, p["Hkv"], p["D"]), dt),
        "pos": pos,
    }


def _fns(impl: str):
    from jaxprune.ops.attention import dot_product_attention

    def fwd(a: dict) -> jax.Array:
        return dot_product_attention(
            a["q"], a["k"], a["v"], q_pos=a["pos"], k_pos=a["pos"], impl=impl
        )

    def loss(qkv: dict, pos: jax.Array) -> jax.Array:
        out = fwd({**qkv, "pos": pos})
        return jnp.sum(out.astype(jnp.float32) * qkv["q"].astype(jnp.float32))

    grad = jax.jit(jax.grad(loss))

    def fwd_bwd(a: dict) -> dict:
        return grad({k: a[k] for k in ("q", "k", "v")}, a["pos"])

    return jax.jit(fwd), fwd_bwd


def _rel_err(got: jax.Array, want: jax.Array) -> float:
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.all(np.isfinite(g)):
        return float("inf")
    return float(np.linalg.norm(g - w) / np.linalg.norm(w))


def attention(dry: bool) -> dict:
    """Values of every impl against "reference" (relative Frobenius error of out and of the
    gradient), then interleaved timings. cuDNN is skipped off-GPU."""
    on_gpu = jax.default_backend() == "gpu"
    p = plan(dry)
    names = [i for i in IMPLS if on_gpu or i not in GPU_ONLY]
    sets = [_inputs(p, s) for s in range(1 if dry else 2)]
    fns = {i: _fns(i) for i in names}
    tol = 2e-2 if p["dtype"] == "bfloat16" else 1e-4
    f_ref, g_ref = fns["reference"]
    want_y, want_g = f_ref(sets[0]), g_ref(sets[0])
    checks = []
    for impl in names:
        if impl == "reference":
            continue
        row = {"impl": impl, "tolerance": tol}
        try:
            f, g = fns[impl]
            row["rel_err_out"] = _rel_err(f(sets[0]), want_y)
            grads = g(sets[0])
            row["rel_err_grad"] = max(_rel_err(grads[k], want_g[k]) for k in ("q", "k", "v"))
            row["passed"] = max(row["rel_err_out"], row["rel_err_grad"]) <= tol
        except Exception as err:
            row.update(passed=False, error=f"{type(err).__name__}: {str(err)[:300]}")
        checks.append(row)
    calls = {}
    for impl, (f, g) in fns.items():
        calls[f"{impl}/fwd"] = (lambda i, f=f: f(sets[i]), jax.block_until_ready)
        calls[f"{impl}/fwdbwd"] = (lambda i, g=g: g(sets[i]), jax.block_until_ready)
    res = time_interleaved(
        calls,
        rounds=1 if dry else 3,
        reps=2 if dry else 10,
        warmup=1 if dry else 3,
        sets=len(sets),
    )
    # causal: half the score matrix; forward 2 matmuls, backward ~2.5x forward
    fwd_flops = 2 * 2 * p["b"] * p["Hq"] * p["T"] * p["T"] * p["D"] / 2
    rows = []
    for key, r in res.items():
        impl, pas = key.split("/")
        flops = fwd_flops * (1.0 if pas == "fwd" else 3.5)
        rows.append({"impl": impl, "pass": pas, **r, "TFLOPs": rate(flops, r.get("ms"))})
    skipped = [f"{i}: GPU only" for i in IMPLS if i not in names]
    return {"plan": p, "checks": checks, "rows": rows, "skipped_impls": skipped}
