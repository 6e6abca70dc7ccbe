"""Cached inference: sampling rules and the jitted generation loop."""

from jaxprune.inference.generate import generate, make_generate
from jaxprune.inference.sampling import sample

__all__ = ["generate", "make_generate", "sample"]
