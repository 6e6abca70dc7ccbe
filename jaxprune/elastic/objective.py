"""The multi-budget training view: each step trains one sampled budget's child.

Per optimizer step (the same for all its micro-batches) :class:`ElasticView` draws a budget
from the curriculum (stage 1: ``probs``; from ``stage2_from`` on: ``stage2_probs``), asks the
router for that budget's logits, samples a straight-through Gumbel-softmax choice per axis
row (temperature annealed geometrically from ``tau_start`` to ``tau_end`` over the run),
and returns the parent masked to that child plus ``budget_weight`` x the budget loss (the
expected parameter count under the router's tempered distribution against the target).
The full budget always trains the whole parent. The router's logits are its output times
``router_lr / lr``: the shared AdamW moves parameters by about lr per step whatever the
gradient scale, so this reparameterisation is what gives the router its own step size.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.atomic import atomic_write_text
from jaxprune.elastic.budget import Memory, budget_loss, expected_cost, full_params
from jaxprune.elastic.extract import choose
from jaxprune.elastic.masks import elastic_mask, one_hot
from jaxprune.elastic.router import Router, probabilities, sample_all
from jaxprune.elastic.space import ElasticSpace
from jaxprune.pruning.masks import Mask, activation_masks, apply
from jaxprune.train.view import StudentView, View


@dataclass(frozen=True)
class ElasticConfig:
    """Budgets (parameter counts, or inference bytes with ``memory``; any order; the
    parent's = the full model) and the curriculum. ``probs`` / ``stage2_probs``: sampling
    weights per budget (default: uniform, then proportional to the budget's size);
    ``stage2_from``: first step of stage 2 (None: no stage 2)."""

    budgets: tuple[float, ...]
    probs: tuple[float, ...] | None = None
    stage2_probs: tuple[float, ...] | None = None
    stage2_from: int | None = None
    budget_weight: float = 1.0
    tau_start: float = 1.0
    tau_end: float = 0.05
    router_hidden: int = 64
    router_lr: float = 1e-2
    memory: Memory | None = None  # budgets in inference bytes at this batch and context

    def weights(self, stage: int) -> np.ndarray:
        n = len(self.budgets)
        if stage == 1:
            p = np.ones(n) if self.probs is None else np.asarray(self.probs, float)
        elif self.stage2_probs is not None:
            p = np.asarray(self.stage2_probs, float)
        else:
            p = np.asarray(self.budgets, float)
        return p / p.sum()


@dataclass(eq=False)
class ElasticView(StudentView):
    """The parent (importance-permuted) trained through the router's sampled children."""

    space: ElasticSpace
    cfg: ElasticConfig
    steps: int
    lr: float
    base: Mask
    router_seed: int = 0
    meta: dict = field(default_factory=dict)
    metric_names = ("budget_loss", "budget_index", "child_cost_frac")

    def __post_init__(self):
        abstract = nnx.eval_shape(  # the router's structure only: no weights are made
            lambda: Router(
                self.space, len(self.cfg.budgets), self.cfg.router_hidden, rngs=nnx.Rngs(0)
            )
        )
        self._graphdef = nnx.graphdef(abstract)
        zeros = {a.name: jnp.zeros(len(a.rows), jnp.int32) for a in self.space.axes}
        self.full = float(self.cost(one_hot(self.space, zeros)))

    def cost(self, probs) -> jax.Array:
        """Expected parameters, or inference bytes with a memory budget."""
        return expected_cost(self.space, probs, self.cfg.memory)

    def init_params(self, key: jax.Array) -> dict:
        router = Router(
            self.space,
            len(self.cfg.budgets),
            self.cfg.router_hidden,
            rngs=nnx.Rngs(self.router_seed),
        )
        return {"router": nnx.state(router, nnx.Param)}

    def logits(self, router_params, budget_index) -> dict:
        """{axis: (rows, K)} logits of budget ``budget_index`` (int or traced)."""
        router = nnx.merge(self._graphdef, router_params)
        onehot = jax.nn.one_hot(budget_index, len(self.cfg.budgets))
        scale = self.cfg.router_lr / self.lr
        return {k: scale * v for k, v in router(onehot).items()}

    def temperature(self, step) -> jax.Array:
        frac = jnp.asarray(step, jnp.float32) / max(self.steps - 1, 1)
        return self.cfg.tau_start * (self.cfg.tau_end / self.cfg.tau_start) ** frac

    def __call__(self, trainable: dict, model, key: jax.Array, step: jax.Array) -> View:
        k_budget, k_gumbel = jax.random.split(key)
        stage2 = self.cfg.stage2_from is not None and self.cfg.stage2_from > 0
        p1 = jnp.asarray(self.cfg.weights(1), jnp.float32)
        p = jnp.where(step >= self.cfg.stage2_from, self.cfg.weights(2), p1) if stage2 else p1
        b = jax.random.categorical(k_budget, jnp.log(p))
        targets = jnp.asarray(self.cfg.budgets, jnp.float32)
        is_full = targets[b] >= self.full * (1 - 1e-6)
        tau = self.temperature(step)
        logits = self.logits(trainable["router"], b)
        y = sample_all(logits, k_gumbel, tau)
        first = {
            n: jax.nn.one_hot(jnp.zeros(v.shape[0], jnp.int32), v.shape[-1]) for n, v in y.items()
        }
        y = {n: jnp.where(is_full, first[n], v) for n, v in y.items()}
        mask = elastic_mask(self.base, self.space, y)
        expected = self.cost(probabilities(logits, tau))
        bl = jnp.where(is_full, 0.0, budget_loss(expected, targets[b], self.full))
        metrics = {
            "budget_loss": bl,
            "budget_index": b.astype(jnp.float32),
            "child_cost_frac": self.cost(jax.lax.stop_gradient(y)) / self.full,
        }
        return View(
            apply(model, mask), activation_masks(mask), self.cfg.budget_weight * bl, metrics
        )

    def choices(self, router_params) -> list[dict]:
        """Each budget's extracted choices (:func:`jaxprune.elastic.extract.choose`)."""
        lg = [jax.device_get(self.logits(router_params, i)) for i in range(len(self.cfg.budgets))]
        return choose(self.space, lg, self.cfg.budgets, memory=self.cfg.memory)

    def export(self, out: Path, params: dict) -> None:
        """``out/elastic.json``: budgets, the space's arguments, each budget's choices and
        parameter count; ``out/router.npz``: the router's parameters."""
        router = params["router"]
        flat = {
            ".".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(router)
        }
        np.savez(out / "router.npz.tmp.npz", **flat)
        (out / "router.npz.tmp.npz").replace(out / "router.npz")
        picked = self.choices(router)
        info = {
            **self.meta,
            "budgets": [float(b) for b in self.cfg.budgets],
            "parent_params": int(full_params(self.space)),
            "parent_cost": self.full,
            "metric": "params" if self.cfg.memory is None else "memory_bytes",
            "children": [{"budget": float(b), **c} for b, c in zip(self.cfg.budgets, picked)],
            "elastic_config": json.loads(json.dumps(dataclasses.asdict(self.cfg))),
        }
        atomic_write_text(out / "elastic.json", json.dumps(info, indent=1))
