"""jaxprune: structured pruning + distillation for hybrid Mamba2 / attention / MoE LLMs."""

__version__ = "0.1.0"
