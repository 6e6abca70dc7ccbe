"""HF / PyTorch checkpoints in, HF checkpoints out, native (orbax) checkpoints in between.

``convert`` (HF -> native), ``export`` (native or in-memory model -> HF), ``load_model``
(either, detected) and ``load_hf``. Family tables live in ``converters.families``.
"""

from jaxprune.converters.api import convert, export, load_hf, load_model
from jaxprune.converters.fsutil import CheckpointError

__all__ = ["CheckpointError", "convert", "export", "load_hf", "load_model"]
