"""Tests for jaxprune.ops.moe: routing against numpy loops, dispatch against the dense reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.ops import moe

N, D, F = 13, 11, 7


@pytest.fixture(autouse=True)
def _strict_promotion():
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


def _sigmoid_np(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _route_sigmoid_np(logits, bias, top_k, n_group, topk_group, norm, scale):
    """Per-token loop: group-limited top-k on biased scores, weights from unbiased ones."""
    n, num_experts = logits.shape
    gsize = num_experts // n_group
    s = _sigmoid_np(logits.astype(np.float64))
    sel = s + bias
    all_w, all_i = [], []
    for t in range(n):
        group_score = []
        for g in range(n_group):
            members = sorted(sel[t, g * gsize : (g + 1) * gsize], reverse=True)
            group_score.append(sum(members[:2]))
        groups = sorted(range(n_group), key=lambda g: (-group_score[g], g))[:topk_group]
        allowed = [e for e in range(num_experts) if e // gsize in groups]
        chosen = sorted(allowed, key=lambda e: (-sel[t, e], e))[:top_k]
        w = np.array([s[t, e] for e in chosen])
        if norm:
            w = w / (w.sum() + 1e-20)
        all_w.append(w * scale)
        all_i.append(chosen)
    return np.array(all_w), np.array(all_i)


def _route_softmax_np(logits, top_k, norm):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    idx = np.stack([sorted(range(p.shape[1]), key=lambda e: (-row[e], e))[:top_k] for row in p])
    w = np.take_along_axis(p, idx, axis=-1)
    if norm:
        w = w / w.sum(-1, keepdims=True)
    return w, idx


def _assert_same_routing(w, i, w_ref, i_ref):
    np.testing.assert_array_equal(np.asarray(i), i_ref)
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("num_experts", "top_k", "n_group", "topk_group"),
    [
        (4, 1, 1, 1),
        (8, 2, 1, 1),
        (8, 3, 4, 2),
        (8, 2, 4, 2),
        (8, 1, 2, 1),
        (4, 2, 4, 2),
    ],
)
@pytest.mark.parametrize("norm", [True, False])
def test_route_sigmoid_matches_numpy(num_experts, top_k, n_group, topk_group, norm):
    rng = np.random.default_rng(num_experts * 100 + top_k * 10 + n_group)
    logits = rng.normal(size=(N, num_experts)).astype(np.float32) * 2
    bias = rng.normal(size=(num_experts,)).astype(np.float32) * 0.3
    w, i = moe.route_sigmoid(
        jnp.asarray(logits),
        jnp.asarray(bias),
        top_k=top_k,
        n_group=n_group,
        topk_group=topk_group,
        norm_topk_prob=norm,
        routed_scaling_factor=2.5,
    )
    assert w.dtype == jnp.float32 and i.dtype == jnp.int32
    assert w.shape == i.shape == (N, top_k)
    w_ref, i_ref = _route_sigmoid_np(logits, bias, top_k, n_group, topk_group, norm, 2.5)
    _assert_same_routing(w, i, w_ref, i_ref)
    if norm:
        np.testing.assert_allclose(np.asarray(w).sum(-1), 2.5, rtol=1e-5)


def test_route_sigmoid_group_limit_restricts_selection():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(N, 8)).astype(np.float32) * 2)
    _, limited = moe.route_sigmoid(logits, None, top_k=3, n_group=4, topk_group=2)
    _, free = moe.route_sigmoid(logits, None, top_k=3)
    groups_used = [len(set(row)) for row in (np.asarray(limited) // 2).tolist()]
    assert max(groups_used) <= 2
    assert not np.array_equal(np.sort(limited, -1), np.sort(free, -1))


def test_route_sigmoid_bias_changes_selection_not_weights():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(N, 8)).astype(np.float32)
    bias = np.zeros(8, np.float32)
    bias[5] = 10.0  # forces expert 5 into every token's selection
    _, i0 = moe.route_sigmoid(jnp.asarray(logits), None, top_k=2, norm_topk_prob=False)
    w1, i1 = moe.route_sigmoid(
        jnp.asarray(logits), jnp.asarray(bias), top_k=2, norm_topk_prob=False
    )
    i1 = np.asarray(i1)
    assert (i1 == 5).any(-1).all()
    assert not np.array_equal(np.asarray(i0), i1)
    # Weights are the unbiased sigmoid scores of the chosen experts, never score + bias.
    expected = np.take_along_axis(_sigmoid_np(logits), i1, axis=-1)
    np.testing.assert_allclose(np.asarray(w1), expected, rtol=1e-6)
    assert np.asarray(w1).max() < 1.0


def test_route_sigmoid_rejects_bad_config():
    logits = jnp.zeros((N, 8), jnp.float32)
    with pytest.raises(ValueError, match="divisible"):
        moe.route_sigmoid(logits, None, top_k=2, n_group=3, topk_group=1)
    with pytest.raises(ValueError, match="top_k"):
        moe.route_sigmoid(logits, None, top_k=5, n_group=4, topk_group=2)


@pytest.mark.parametrize(("num_experts", "top_k"), [(4, 1), (8, 2), (8, 3)])
@pytest.mark.parametrize("norm", [True, False])
def test_route_softmax_matches_numpy(num_experts, top_k, norm):
    rng = np.random.default_rng(num_experts + top_k)
    logits = rng.normal(size=(N, num_experts)).astype(np.float32) * 2
    w, i = moe.route_softmax(
        jnp.asarray(logits).astype(jnp.bfloat16), top_k=top_k, norm_topk_prob=norm
    )
    assert w.dtype == jnp.float32 and i.dtype == jnp.int32
    logits_bf16 = np.asarray(jnp.asarray(logits).astype(jnp.bfloat16).astype(jnp.float32))
    _assert_same_routing(w, i, *_route_softmax_np(logits_bf16, top_k, norm))


def test_expert_token_counts():
    rng = np.random.default_rng(2)
    _, idx = moe.route_softmax(jnp.asarray(rng.normal(size=(N, 8)).astype(np.float32)), top_k=3)
    counts = moe.expert_token_counts(idx, 8)
    assert counts.dtype == jnp.int32
    np.testing.assert_array_equal(counts, np.bincount(np.asarray(idx).ravel(), minlength=8))
    mask = np.arange(N) % 3 != 0
    masked = moe.expert_token_counts(idx, 8, jnp.asarray(mask))
    np.testing.assert_array_equal(masked, np.bincount(np.asarray(idx)[mask].ravel(), minlength=8))
    assert int(masked.sum()) == 3 * int(mask.sum())


def _problem(num_experts, top_k, gated, seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return jnp.asarray(rng.normal(size=shape).astype(np.float32) * scale)

    x = normal(N, D)
    weights, indices = moe.route_softmax(normal(N, num_experts, scale=2.0), top_k=top_k)
    w_up = normal(num_experts, D, F, scale=D**-0.5)
    w_down = normal(num_experts, F, D, scale=F**-0.5)
    w_gate = normal(num_experts, D, F, scale=D**-0.5) if gated else None
    return x, weights, indices, w_up, w_down, w_gate


def _expert_np(xt, e, w_up, w_down, w_gate):
    up = xt @ w_up[e]
    if w_gate is None:
        h = np.maximum(up, 0.0) ** 2
    else:
        g = xt @ w_gate[e]
        h = g / (1.0 + np.exp(-g)) * up
    return h @ w_down[e]


CASES = [(4, 1), (8, 2), (8, 3)]


@pytest.mark.parametrize("gated", [False, True], ids=["relu2", "swiglu"])
def test_moe_dense_single_token_hand_loop(gated):
    x, weights, indices, w_up, w_down, w_gate = _problem(8, 3, gated, seed=3)
    out = np.asarray(moe.moe_dense(x, weights, indices, w_up, w_down, w_gate))
    arrays = [None if a is None else np.asarray(a, np.float64) for a in (w_up, w_down, w_gate)]
    for t in (0, 7):
        xt = np.asarray(x[t], np.float64)
        ref = sum(
            float(weights[t, j]) * _expert_np(xt, int(indices[t, j]), *arrays)
            for j in range(indices.shape[1])
        )
        np.testing.assert_allclose(out[t], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gated", [False, True], ids=["relu2", "swiglu"])
@pytest.mark.parametrize(("num_experts", "top_k"), CASES)
def test_moe_sorted_matches_dense(num_experts, top_k, gated):
    args = _problem(num_experts, top_k, gated, seed=num_experts + top_k)
    dense = moe.moe_dense(*args)
    assert dense.shape == (N, D) and dense.dtype == jnp.float32
    np.testing.assert_allclose(moe.moe_sorted(*args), dense, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(moe.moe_sorted)(*args)
    np.testing.assert_allclose(jitted, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gated", [False, True], ids=["relu2", "swiglu"])
@pytest.mark.parametrize(("num_experts", "top_k"), [(4, 1), (8, 3)])
def test_moe_sorted_grads_match_dense(num_experts, top_k, gated):
    x, weights, indices, w_up, w_down, w_gate = _problem(num_experts, top_k, gated, seed=5)
    probe = jnp.asarray(np.random.default_rng(6).normal(size=(N, D)).astype(np.float32))
    diff = (x, weights, w_up, w_down) + ((w_gate,) if gated else ())

    def loss(fn, x, weights, w_up, w_down, w_gate=None):
        return jnp.sum(fn(x, weights, indices, w_up, w_down, w_gate) * probe)

    argnums = tuple(range(1, len(diff) + 1))
    g_dense = jax.jit(jax.grad(loss, argnums), static_argnums=0)(moe.moe_dense, *diff)
    g_sorted = jax.jit(jax.grad(loss, argnums), static_argnums=0)(moe.moe_sorted, *diff)
    for gd, gs in zip(g_dense, g_sorted, strict=True):
        assert float(jnp.abs(gd).max()) > 0
        np.testing.assert_allclose(gs, gd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights_bf16", [False, True], ids=["w_fp32", "w_bf16"])
@pytest.mark.parametrize("gated", [False, True], ids=["relu2", "swiglu"])
def test_moe_bf16_close_to_fp32(gated, weights_bf16):
    x, weights, indices, w_up, w_down, w_gate = _problem(8, 2, gated, seed=7)
    ref = moe.moe_dense(x, weights, indices, w_up, w_down, w_gate)
    scale = float(jnp.abs(ref).max())
    x16 = x.astype(jnp.bfloat16)
    if weights_bf16:
        w_up, w_down = w_up.astype(jnp.bfloat16), w_down.astype(jnp.bfloat16)
        w_gate = None if w_gate is None else w_gate.astype(jnp.bfloat16)
    outs = [
        jax.jit(fn)(x16, weights, indices, w_up, w_down, w_gate)
        for fn in (moe.moe_dense, moe.moe_sorted)
    ]
    for out in outs:
        assert out.dtype == jnp.bfloat16
        np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2 * scale)
    # Same rounding points in both dispatchers: they agree to bf16 output precision.
    dense16, sorted16 = (o.astype(jnp.float32) for o in outs)
    np.testing.assert_allclose(sorted16, dense16, atol=8e-3 * scale)


def test_moe_ignores_unselected_experts():
    x, weights, _, w_up, w_down, _ = _problem(4, 1, False, seed=8)
    idx = jnp.zeros((N, 1), jnp.int32)  # every token goes to expert 0
    base = moe.moe_sorted(x, weights, idx, w_up, w_down)
    poisoned_up = w_up.at[1:].set(1e3)
    np.testing.assert_array_equal(moe.moe_sorted(x, weights, idx, poisoned_up, w_down), base)
    np.testing.assert_allclose(moe.moe_dense(x, weights, idx, poisoned_up, w_down), base, atol=1e-5)
    counts = moe.expert_token_counts(idx, 4)
    np.testing.assert_array_equal(counts, [N, 0, 0, 0])
