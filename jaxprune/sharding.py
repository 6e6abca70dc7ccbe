"""Logical axis names -> mesh axes: one rules table, a mesh with Auto axes, param shardings.

Every parameter carries ``axes`` metadata naming one logical axis per dimension (see
``jaxprune.nn.init.param``). The rules table maps each logical name to a mesh axis (or
None: replicated). A dimension is only sharded when the mesh axis divides it and no earlier
dimension of the same tensor already uses that mesh axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

#: The one rules table: FSDP over the embedding dim, tensor parallel over heads / MLP /
#: experts / vocab. Activations: batch over (data, fsdp).
RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("ssm_heads", "tensor"),
    ("ssm_head_dim", None),
    ("ssm_groups", None),
    ("ssm_state", None),
    ("conv", None),
    ("experts", "tensor"),
    ("expert_embed", "fsdp"),
    ("expert_mlp", None),
    ("latent", None),
)


def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types; one size may be -1 (the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError("make_mesh: at most one axis size may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"make_mesh: {len(devices)} devices do not divide by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"make_mesh: axes {sizes} need {np.prod(sizes)} devices, have {len(devices)}"
        )
    grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def logical_to_spec(
    axes: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Rules = RULES,
) -> PartitionSpec:
    """PartitionSpec for a tensor of ``shape`` whose dims are named ``axes``."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, dim in zip(axes, shape, strict=True):
        target = table.get(name) if name is not None else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        names = tuple(n for n in names if n in mesh.shape and mesh.shape[n] > 1 and n not in used)
        size = int(np.prod([mesh.shape[n] for n in names])) if names else 1
        if not names or dim % size:
            spec.append(None)
            continue
        used.update(names)
        spec.append(names[0] if len(names) == 1 else names)
    return PartitionSpec(*spec)


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules = RULES) -> nnx.State:
    """A NamedSharding per variable, from its ``axes`` metadata (replicated if it has none)."""

    def one(v: nnx.Variable):
        axes = v.get_metadata().get("axes")
        shape = v.get_value().shape  # works for arrays and ShapeDtypeStructs
        spec = PartitionSpec() if axes is None else logical_to_spec(axes, shape, mesh, rules)
        return v.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int = 2, rules: Rules = RULES) -> NamedSharding:
    """Sharding of a (batch, length, ...) input: batch over the rules' ``batch`` axes."""
    target = dict(rules)["batch"]
    names = tuple(n for n in ((target,) if isinstance(target, str) else target) if n in mesh.shape)
    return NamedSharding(mesh, PartitionSpec(names, *([None] * (ndim - 1))))
