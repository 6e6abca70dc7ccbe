import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.testing.train import build_step, host_batch, small_config
from jaxprune.train.config import LossConfig, OptimConfig, TrainConfig

FP32 = {"compute_dtype": "float32", "teacher_dtype": "float32"}
KD = LossConfig(intermediate=((1, 3), (-1, -1)), ce_weight=0.5, chunk=5)


def _run(n_devices, cfg, steps=2, **kw):
    fn, state, rest, t_state, put = build_step(cfg, n_devices, **kw)
    batch = put(host_batch(cfg.grad_accum, cfg.batch_size // cfg.grad_accum, cfg.seq_len))
    metrics = []
    for _ in range(steps):
        state, m = fn(state, rest, t_state, batch)
        metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics


@pytest.mark.slow
def test_loss_and_params_agree_between_1_and_8_devices():
    """A teacher of another architecture (deeper, wider), intermediate losses through
    a learned map, CE, gradient accumulation: fp32 loss equal on 1 and 8 devices."""
    # AdamW turns float-rounding differences of near-zero gradients into updates of up
    # to lr per step, so the parameter tolerance below holds for lr 3e-4
    optim = OptimConfig(lr=3e-4)
    cfg = TrainConfig(steps=4, batch_size=8, seq_len=12, grad_accum=2, loss=KD, optim=optim, **FP32)
    one, m1 = _run(1, cfg, teacher_cfg=small_config(32, "M-*-"))
    eight, m8 = _run(8, cfg, teacher_cfg=small_config(32, "M-*-"))
    for a, b in zip(m1, m8):
        assert not a["skipped"] and a["inter"] > 0 and a["kl"] > 0
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)
    print("1-vs-8 device loss diff:", [float(a["loss"] - b["loss"]) for a, b in zip(m1, m8)])
    chex.assert_trees_all_close(one["params"], eight["params"], rtol=1e-4, atol=1e-6)
    assert one["params"]["proj"].shape == (24, 32)


@pytest.mark.slow
def test_grad_accumulation_equals_one_big_batch():
    opt = OptimConfig(warmup_steps=0, schedule="constant", lr=1e-2)
    base = {"steps": 2, "seq_len": 12, "optim": opt, "loss": LossConfig(kl="none", ce_weight=1.0)}
    tiny = small_config(16, "*-")
    a, ma = _run(
        1, TrainConfig(batch_size=4, grad_accum=2, **base, **FP32), steps=1, student_cfg=tiny
    )
    fn, state, rest, _, put = build_step(
        TrainConfig(batch_size=4, **base, **FP32), 1, student_cfg=tiny
    )
    hb = host_batch(2, 2, 12)
    merged = {k: v.reshape(1, 4, *v.shape[2:]) for k, v in hb.items()}
    state, mb = fn(state, rest, None, put(merged))
    np.testing.assert_allclose(ma[0]["loss"], mb["loss"], rtol=1e-6)
    chex.assert_trees_all_close(a["params"], jax.device_get(state["params"]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_non_finite_steps_are_skipped_inside_jit_and_the_state_is_donated():
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=8, loss=LossConfig(kl="reverse"))
    fn, state, rest, t_state, put = build_step(cfg, 1, teacher_cfg=small_config(hidden=16))
    batch = put(host_batch(1, 2, 8))
    state, m = fn(state, rest, t_state, batch)
    assert m["skipped"] == 0 and state["step"] == 1
    # bf16 compute, fp32 master weights and moments
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))
    before = jax.tree.map(np.array, state)  # copies: a zero-copy view would block donation
    old = state
    bad = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), t_state)
    state, m = fn(state, rest, bad, batch)
    assert all(x.is_deleted() for x in jax.tree.leaves(old))  # donated
    assert int(m["skipped"]) == 1 and not np.isfinite(float(m["loss"]))
    after = jax.device_get(state)
    chex.assert_trees_all_equal(before["params"], after["params"])
    chex.assert_trees_all_equal(before["opt_state"], after["opt_state"])
    assert int(after["step"]) == 2
    state, m = fn(state, rest, t_state, batch)
    assert int(m["skipped"]) == 0 and np.isfinite(float(m["loss"]))


def test_block_remat_recomputes_the_blocks_and_leaves_the_step_unchanged():
    """remat="block": the student's blocks are checkpointed (only their inputs kept for
    the backward), the teacher's are not, and loss, gradients and updates are unchanged."""
    loss = LossConfig(intermediate=((1, 1),), ce_weight=0.5, chunk=4)
    opt = OptimConfig(lr=1e-2, warmup_steps=0, eps=1.0)  # eps 1: no rounding amplification
    base = TrainConfig(steps=2, batch_size=2, seq_len=8, loss=loss, optim=opt, **FP32)
    runs, jaxprs = [], []
    for remat in ("none", "block"):
        cfg = base.replace(remat=remat)
        fn, state, rest, t_state, put = build_step(cfg, 1, teacher_cfg=small_config(24, "M*-"))
        batch = put(host_batch(1, 2, 8))
        jaxprs.append(str(jax.make_jaxpr(fn)(state, rest, t_state, batch)))
        state, m = fn(state, rest, t_state, batch)
        runs.append((jax.device_get(state["params"]), jax.device_get(m)))
    # one checkpoint per student block (M, *, -) on top of the chunked loss's own
    n_remat = lambda j: len(re.findall(r"= (?:remat2|checkpoint)\[", j))  # noqa: E731
    extra = n_remat(jaxprs[1]) - n_remat(jaxprs[0])
    assert extra == len(small_config().layers) == 3
    (p0, m0), (p1, m1) = runs
    for k in ("loss", "kl", "ce", "inter", "grad_norm"):
        np.testing.assert_allclose(m0[k], m1[k], rtol=1e-5, atol=1e-7, err_msg=k)
    chex.assert_trees_all_close(p0, p1, rtol=1e-5, atol=1e-6)


def test_remat_must_be_a_known_policy():
    with pytest.raises(Exception, match="remat 'all'; choose from none, block"):
        TrainConfig(remat="all")
