import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxprune.nn.model import init_model
from jaxprune.sharding import RULES, batch_sharding, logical_to_spec, make_mesh, state_shardings
from jaxprune.testing.configs import hybrid_config


def test_mesh_has_auto_axes_and_fills_the_free_axis():
    mesh = make_mesh(data=-1, fsdp=2, tensor=2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="need"):
        make_mesh(data=3, fsdp=1, tensor=1)


def test_logical_rules_skip_indivisible_and_repeated_axes():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    assert logical_to_spec(("embed", "mlp"), (8, 6), mesh) == P("fsdp", "tensor")
    assert logical_to_spec(("embed", "mlp"), (7, 6), mesh) == P(None, "tensor")
    # a second dim mapped to an axis already in use stays replicated
    assert logical_to_spec(("heads", "kv_heads"), (4, 4), mesh) == P("tensor", None)
    assert logical_to_spec((None, "vocab"), (3, 4), mesh) == P(None, "tensor")


def test_every_parameter_has_a_logical_axis_per_dim_known_to_the_rules():
    model = nnx.eval_shape(lambda: init_model(hybrid_config()))
    names = {name for name, _ in RULES}
    for path, v in nnx.to_flat_state(nnx.state(model)):
        axes = v.get_metadata().get("axes")
        assert axes is not None and len(axes) == v.get_value().ndim, path
        assert set(axes) <= names, (path, axes)


def test_sharded_forward_and_grad_equal_single_device():
    cfg = hybrid_config()
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded = init_model(cfg, 0, mesh=mesh)
    single = init_model(cfg, 0)
    specs = state_shardings(nnx.state(sharded), mesh)
    for (path, v), (_, s) in zip(
        nnx.to_flat_state(nnx.state(sharded)), nnx.to_flat_state(specs), strict=True
    ):
        assert v[...].sharding.spec == s.get_value().spec, path
    tokens = jax.random.randint(jax.random.key(0), (4, 12), 0, cfg.vocab_size)
    tokens_sharded = jax.device_put(tokens, batch_sharding(mesh))

    def loss(model, tokens):
        return jnp.mean(jax.nn.logsumexp(model(tokens), -1))

    f = jax.jit(jax.value_and_grad(loss))
    (l1, g1), (l2, g2) = f(sharded, tokens_sharded), f(single, tokens)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for (path, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(g1)), nnx.to_flat_state(nnx.state(g2)), strict=True
    ):
        np.testing.assert_allclose(a[...], b[...], rtol=1e-4, atol=1e-6, err_msg=str(path))
