"""Model state: flat params <-> model, through the one abstract model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxprune.errors import UserError
from jaxprune.nn.model import init_model
from jaxprune.nn.state import (
    abstract_model,
    flat_state,
    model_from_params,
    model_params,
    param_paths,
)


def _forward(model, tokens):
    return np.asarray(jax.jit(lambda m, t: m(t))(model, tokens))


def test_abstract_model_has_the_real_models_paths_shapes_and_dtypes(hybrid_cfg):
    abstract = param_paths(abstract_model(hybrid_cfg))
    real = model_params(init_model(hybrid_cfg, 0))
    assert set(abstract) == set(real)
    for k, var in abstract.items():
        spec = var.get_value()
        assert isinstance(spec, jax.ShapeDtypeStruct)
        assert (spec.shape, spec.dtype) == (real[k].shape, real[k].dtype), k


def test_params_round_trip_and_cast_into_each_variables_dtype(hybrid_cfg):
    model = init_model(hybrid_cfg, 0)
    tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, hybrid_cfg.vocab_size)
    params = model_params(model)
    again = model_from_params(hybrid_cfg, params)
    np.testing.assert_array_equal(_forward(again, tokens), _forward(model, tokens))

    bf16 = hybrid_cfg.replace(param_dtype="bfloat16")
    cast = param_paths(model_from_params(bf16, params))
    assert cast["embed"].get_value().dtype == jnp.bfloat16
    assert cast["blocks.3.mixer.router"].get_value().dtype == jnp.float32  # router stays fp32
    np.testing.assert_array_equal(
        np.asarray(cast["embed"].get_value()), params["embed"].astype(jnp.bfloat16)
    )


def test_host_values_stay_numpy_and_give_the_same_model(hybrid_cfg):
    model = init_model(hybrid_cfg, 1)
    host = model_from_params(hybrid_cfg, model_params(model), host=True)
    assert all(isinstance(v.get_value(), np.ndarray) for v in param_paths(host).values())
    tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, hybrid_cfg.vocab_size)
    np.testing.assert_array_equal(_forward(host, tokens), _forward(model, tokens))


def test_flat_state_of_split_states_is_model_params(hybrid_cfg):
    model = init_model(hybrid_cfg, 2)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    flat = flat_state(params, rest)
    want = model_params(model)
    assert set(flat) == set(want) and len(rest) > 0  # the MoE correction bias is not a Param
    for k, v in want.items():
        np.testing.assert_array_equal(np.asarray(flat[k]), v)


def test_mismatched_params_are_named(hybrid_cfg):
    params = model_params(init_model(hybrid_cfg, 0))
    missing = {k: v for k, v in params.items() if k != "final_norm.weight"}
    with pytest.raises(UserError, match=r"missing \['final_norm.weight'\]"):
        model_from_params(hybrid_cfg, missing)
    with pytest.raises(UserError, match=r"unexpected \['blocks.9.norm.weight'\]"):
        model_from_params(hybrid_cfg, {**params, "blocks.9.norm.weight": np.ones(24)})
    bad = {**params, "blocks.1.mixer.up_proj": np.zeros((24, 28), np.float32)}
    with pytest.raises(UserError, match=r"blocks.1.mixer.up_proj has shape \(24, 28\)"):
        model_from_params(hybrid_cfg, bad)
