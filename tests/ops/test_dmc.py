"""DMC math with decisions set by hand: the parallel training form (accumulated states
and the log(1 - alpha) bias) gives exactly what the token-by-token cache gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.ops import dmc as ops

# per (token, KV head): 1 merges into the last slot, 0 appends; head 1 never merges
ALPHA = np.array([[0, 0], [1, 0], [1, 0], [0, 0], [1, 0], [0, 0], [0, 0], [1, 0]], np.float32)


def _inputs(b=1, t=8, hq=4, hkv=2, d=6, seed=0):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(k1, (b, t, hq, d))
    k = jax.random.normal(k2, (b, t, hkv, d))
    v = jax.random.normal(k3, (b, t, hkv, d))
    omega = jax.random.uniform(k4, (b, t, hkv), minval=0.2, maxval=1.0)
    return q, k, v, omega


def _parallel(q, k, v, omega, alpha):
    positions = jnp.broadcast_to(jnp.arange(q.shape[1]), q.shape[:2])
    log1m = jnp.where(alpha > 0, -1e30, 0.0)
    alpha, log1m = ops.force_append(alpha, log1m, ops.segment_starts(positions))
    km, vm = ops.normalise(ops.accumulate(alpha, omega, k, v), k.dtype)
    out = ops.dmc_attention(q, km, vm, ops.key_bias(log1m), positions=positions)
    return out, ops.prefill_layout(alpha, jnp.ones(q.shape[:2], bool))[1]


def _sequential(q, k, v, omega, logit, slots):
    b, t, hkv, d = k.shape
    kc = jnp.zeros((b, slots, hkv, d))
    vc = jnp.zeros_like(kc)
    length = jnp.zeros((b, hkv), jnp.int32)
    sums = jnp.zeros((b, hkv, 2 * d + 1))
    real = jnp.ones((b,), bool)
    outs = []
    for i in range(t):
        merge = ops.decode_decision(logit[:, i], length, slots, real)
        sums, slot, length = ops.decode_update(sums, length, merge, omega[:, i], k[:, i],
                                               v[:, i], real)  # fmt: skip
        km, vm = ops.normalise(sums, k.dtype)
        kc, vc = ops.write_slot(kc, km, slot), ops.write_slot(vc, vm, slot)
        outs.append(ops.cache_attention(q[:, i : i + 1], kc, vc, length))
    return jnp.concatenate(outs, axis=1), length


def test_hand_set_decisions_parallel_equals_token_by_token_cache():
    q, k, v, omega = _inputs()
    alpha = jnp.asarray(ALPHA)[None]
    logit = jnp.where(alpha > 0, 10.0, -10.0)
    par, par_len = _parallel(q, k, v, omega, alpha)
    seq, seq_len = _sequential(q, k, v, omega, logit, slots=8)
    np.testing.assert_allclose(np.asarray(par), np.asarray(seq), atol=1e-5)
    # head 0 keeps 4 slots (tokens 0, 3, 5, 6 open them), head 1 all 8
    assert np.asarray(par_len).tolist() == [[4, 8]] == np.asarray(seq_len).tolist()


def test_merged_slot_is_the_omega_weighted_mean():
    _, k, v, omega = _inputs(t=3, hkv=1)
    alpha = jnp.asarray([[[0.0], [1.0], [1.0]]])
    km, vm = ops.normalise(ops.accumulate(alpha, omega, k, v), jnp.float32)
    w = np.asarray(omega[0, :, 0])
    want_k = (w[:, None] * np.asarray(k[0, :, 0])).sum(0) / w.sum()
    np.testing.assert_allclose(np.asarray(km[0, -1, 0]), want_k, rtol=1e-5)
    want_v = (w[:2, None] * np.asarray(v[0, :2, 0])).sum(0) / w[:2].sum()
    np.testing.assert_allclose(np.asarray(vm[0, 1, 0]), want_v, rtol=1e-5)


def test_a_full_cache_forces_merges_and_an_empty_one_never_merges():
    length = jnp.asarray([[0, 3, 2]])
    merge = ops.decode_decision(jnp.asarray([[5.0, -5.0, -5.0]]), length, 3, jnp.ones(1, bool))
    assert np.asarray(merge).tolist() == [[False, True, False]]


def test_padding_takes_no_action():
    sums = jnp.ones((1, 1, 5))
    out, slot, length = ops.decode_update(
        sums, jnp.asarray([[2]]), jnp.asarray([[False]]), jnp.ones((1, 1)), jnp.ones((1, 1, 2)),
        jnp.ones((1, 1, 2)), jnp.asarray([False]),
    )  # fmt: skip
    assert np.asarray(length).tolist() == [[2]] and np.asarray(slot).tolist() == [[-1]]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(sums))


@pytest.mark.parametrize("step,want", [(0, 1.0), (5, 2.5), (10, 4.0), (20, 4.0)])
def test_target_ratio_ramps_linearly_then_holds(step, want):
    got = ops.ratio_target(jnp.asarray(step), steps=40, target=4.0, ramp_fraction=0.25)
    assert float(got) == pytest.approx(want)


def test_ratio_loss_is_one_sided():
    assert float(ops.ratio_loss(jnp.asarray(0.25), jnp.asarray(2.0))) == pytest.approx(0.25)
    assert float(ops.ratio_loss(jnp.asarray(0.8), jnp.asarray(2.0))) == 0.0
