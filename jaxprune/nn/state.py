"""Model state as flat parameters: ``{dotted path: array}`` <-> a :class:`HybridLM`.

Paths are the model's attribute paths joined by dots (``blocks.3.mixer.z_proj``), the keys
of native checkpoints, pruning groups and score files alike. Building a model from values
always goes through :func:`abstract_model` (the one ``nnx.eval_shape`` of a config) and
casts every value into the dtype that config gives its variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.config import ModelConfig
from jaxprune.errors import UserError
from jaxprune.nn.model import HybridLM, abstract_model


def flat_state(*states: nnx.State) -> dict[str, Any]:
    """{dotted path: value} of one or more states (e.g. ``nnx.split``'s params and rest)."""
    return {".".join(map(str, p)): v.get_value() for s in states for p, v in nnx.to_flat_state(s)}


def param_paths(model_or_abstract: nnx.Module) -> dict[str, nnx.Variable]:
    """{dotted path: variable} for every variable of a model (or an ``abstract_model``)."""
    return {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model_or_abstract))}


def model_params(model: HybridLM) -> dict[str, np.ndarray]:
    """Every variable as a host numpy array, keyed by dotted path."""
    return {k: np.asarray(v[...]) for k, v in param_paths(model).items()}


def model_from_params(
    cfg: ModelConfig, params: Mapping[str, Any], *, host: bool = False
) -> HybridLM:
    """The model of ``cfg`` whose variables are ``params`` (each cast to its variable's dtype).

    ``host``: keep the values as numpy arrays (nothing is put on a device; e.g. to place
    them with shardings next, or to write them out). Raises UserError naming missing,
    unexpected or mis-shaped parameters.
    """
    abstract = abstract_model(cfg)
    want = param_paths(abstract)
    missing = sorted(set(want) - set(params))
    extra = sorted(set(params) - set(want))
    if missing or extra:
        raise UserError(
            f"parameters do not match the config: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for k, var in want.items():
        a, spec = params[k], var.get_value()
        if tuple(np.shape(a)) != tuple(spec.shape):
            raise UserError(
                f"parameter {k} has shape {tuple(np.shape(a))}, config implies {spec.shape}"
            )
        var.set_value(np.asarray(a).astype(spec.dtype) if host else jnp.asarray(a, spec.dtype))
    return nnx.merge(*nnx.split(abstract))


__all__ = [
    "abstract_model",
    "flat_state",
    "model_from_params",
    "model_params",
    "param_paths",
]
