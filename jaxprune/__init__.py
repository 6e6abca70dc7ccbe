"""jaxprune: structured pruning + distillation for hybrid Mamba2 / attention / MoE LLMs.

The Python API (docs/python_api.md): :func:`compress` runs the whole ``compress`` pipeline in
one call; the steps are :func:`resolve_model`, :func:`score_model`, :func:`prune`,
:func:`run_search`, :func:`distill` (``jaxprune.train.run``), :func:`evaluate_lm_loss` and
:func:`export`. They load on first use, so ``import jaxprune`` stays cheap (no jax import).
"""

from importlib import import_module

__version__ = "0.1.0"

#: Public name -> (module, attribute), imported on first access.
_LAZY = {
    "compress": ("jaxprune.api", "compress"),
    "CompressResult": ("jaxprune.api", "CompressResult"),
    "as_corpus": ("jaxprune.api", "as_corpus"),
    "load_model": ("jaxprune.converters.api", "load_model"),
    "resolve_model": ("jaxprune.models", "resolve_model"),
    "score_model": ("jaxprune.pruning.scoring", "score_model"),
    "prune": ("jaxprune.pruning.prune", "prune"),
    "run_search": ("jaxprune.search.run", "run_search"),
    "distill": ("jaxprune.train.trainer", "run"),
    "evaluate_lm_loss": ("jaxprune.evaluation", "evaluate_lm_loss"),
    "export": ("jaxprune.converters.api", "export"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
