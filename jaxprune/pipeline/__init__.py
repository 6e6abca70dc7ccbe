"""The ``compress`` pipeline: :func:`run_compress` over the same library functions as the
separate commands (``compress.py``), with checks before any work (``checks.py``) and a
stage cache keyed by what each stage depends on (``cache.py``)."""

from jaxprune.pipeline.compress import CompressConfig, run_compress

__all__ = ["CompressConfig", "run_compress"]
