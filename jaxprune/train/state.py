"""Building the train state: models in their training dtypes, placed on the mesh, and the
initial (or abstract, for restoring) state with its shardings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxprune.nn.model import HybridLM
from jaxprune.nn.state import model_from_params, model_params
from jaxprune.train.step import SplitModel, params_shardings, replicated, train_state_shardings


def place(tree, shardings):
    """Put host or single-device arrays onto ``shardings`` (global arrays; every process
    must hold the same values). Works with several processes."""

    def one(x, s):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

    return jax.tree.map(one, tree, shardings)


def retype(model: HybridLM, dtype: str, param_dtype: str, mesh: Mesh) -> HybridLM:
    """The same weights with compute ``dtype`` and parameters cast to ``param_dtype``
    (fp32 buffers stay fp32), sharded on ``mesh`` by the logical rules."""
    cfg = model.config.replace(dtype=dtype, param_dtype=param_dtype)
    graphdef, cast = nnx.split(model_from_params(cfg, model_params(model), host=True))
    return nnx.merge(graphdef, place(cast, params_shardings(cast, mesh)))


def abstract_state(
    student: SplitModel,
    tx: optax.GradientTransformation,
    proj_shape: tuple[int, int] | None,
    extra: dict | None = None,
) -> dict:
    """ShapeDtypeStruct tree of the train state (see ``jaxprune.train.step``); ``extra``:
    more trainable pytrees {name: tree} (a view's parameters)."""

    def build():
        params = {"model": student.params, **(extra or {})}
        if proj_shape is not None:
            params["proj"] = jnp.zeros(proj_shape, jnp.float32)
        return {
            "params": params,
            "opt_state": tx.init(params),
            "rng": jax.random.key_data(jax.random.key(0)),
            "step": jnp.zeros((), jnp.int32),
        }

    return jax.eval_shape(build)


def init_state(
    student: SplitModel,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    seed: int,
    proj_shape: tuple[int, int] | None = None,
    extra: dict | None = None,
) -> tuple[dict, dict]:
    """The initial train state (sharded) and its shardings. The projection (d_s, d_t), when
    asked for, starts as the identity on the shared leading dims (scaled normal elsewhere);
    ``extra`` {name: tree}: more trainable parameters, with these initial values."""
    abstract = abstract_state(student, tx, proj_shape, extra)
    sh = train_state_shardings(abstract, params_shardings(student.params, mesh), tx, mesh)
    extra = jax.tree.map(np.asarray, extra or {})

    def build(params_model, key):
        params = {"model": params_model, **jax.tree.map(jnp.asarray, extra)}
        if proj_shape is not None:
            ds, dt = proj_shape
            noise = jax.random.normal(jax.random.fold_in(key, 1), proj_shape) / np.sqrt(ds)
            params["proj"] = jnp.eye(ds, dt, dtype=jnp.float32) + 0.01 * noise
        return {
            "params": params,
            "opt_state": tx.init(params),
            "rng": jax.random.key_data(key),
            "step": jnp.zeros((), jnp.int32),
        }

    fn = jax.jit(build, in_shardings=(sh["params"]["model"], replicated(mesh)), out_shardings=sh)
    return fn(student.params, jax.random.key(seed)), sh
