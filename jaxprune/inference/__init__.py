"""Cached inference: sampling rules, the jitted generation loop and step-by-step decoding."""

from jaxprune.inference.generate import generate, make_generate, make_picker
from jaxprune.inference.sampling import sample
from jaxprune.inference.stream import Decoder, generate_ids, generate_text
from jaxprune.inference.text import left_pad, round_up

__all__ = [
    "Decoder",
    "generate",
    "generate_ids",
    "generate_text",
    "left_pad",
    "make_generate",
    "make_picker",
    "round_up",
    "sample",
]
