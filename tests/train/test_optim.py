import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune.train.config import OptimConfig, TrainConfig
from jaxprune.train.optim import decay_mask, make_optimizer, make_schedule


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    f = make_schedule(OptimConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1), 100)
    np.testing.assert_allclose([f(i) for i in range(5)], [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-6)
    assert float(f(52)) == pytest.approx(0.55, rel=1e-3)  # halfway through the cosine
    assert float(f(100)) == pytest.approx(0.1, rel=1e-5)
    assert all(float(f(i)) >= float(f(i + 1)) for i in range(4, 100))


def test_wsd_is_flat_then_decays_linearly_over_the_last_fraction():
    f = make_schedule(
        OptimConfig(lr=2.0, warmup_steps=2, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0),
        100,
    )
    assert float(f(1)) == pytest.approx(2.0)
    assert float(f(50)) == pytest.approx(2.0) and float(f(80)) == pytest.approx(2.0)
    assert float(f(90)) == pytest.approx(1.0, rel=1e-3)
    assert float(f(100)) == pytest.approx(0.0, abs=1e-6)


def test_adamw_decays_only_matrices_and_clips_the_global_norm():
    params = {"w": jnp.ones((2, 2)), "norm": jnp.ones((2,))}
    cfg = OptimConfig(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5, clip_norm=1.0)
    assert decay_mask(params) == {"w": True, "norm": False}
    tx = make_optimizer(cfg, 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(upd["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(upd["norm"], 0.0)
    big = {"w": 100 * jnp.ones((2, 2)), "norm": jnp.zeros((2,))}
    clip = optax.clip_by_global_norm(1.0)
    clipped, _ = clip.update(big, clip.init(big))
    assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def test_train_config_round_trips_and_validates():
    cfg = TrainConfig(steps=5, batch_size=4, grad_accum=2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="multiple of grad_accum"):
        TrainConfig(batch_size=5, grad_accum=2)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


@pytest.mark.parametrize("total, expected", [(150, 8), (20, 1), (2000, 100), (10_000, 100), (1, 0)])
def test_default_warmup_is_a_fraction_of_the_run_with_a_cap(total, expected):
    cfg = OptimConfig(lr=1.0)
    assert cfg.warmup(total) == expected
    f = make_schedule(cfg, total)
    if expected > 1:  # linear from lr / warm: the peak is reached at step warm - 1
        assert float(f(0)) == pytest.approx(1.0 / expected, rel=1e-5)
        assert float(f(expected - 1)) == pytest.approx(1.0, rel=1e-5)


def test_explicit_warmup_steps_win_over_the_fraction():
    assert OptimConfig(warmup_steps=40).warmup(150) == 40
    assert OptimConfig(warmup_steps=40).warmup(30) == 29  # never the whole run
    assert OptimConfig(warmup_fraction=0.5, warmup_cap=1000).warmup(150) == 75


@pytest.mark.parametrize(
    "bad", [{"warmup_fraction": 1.5}, {"warmup_fraction": -0.1}, {"warmup_cap": -1}]
)
def test_bad_warmup_settings_are_refused(bad):
    from jaxprune.errors import UserError

    with pytest.raises(UserError, match="warmup"):
        OptimConfig(**bad)
