"""Mamba2 SSD (state-space duality) chunked scan: pure-JAX reference and public op."""

from __future__ import annotations

from jaxprune.kernels.ssd.api import mamba_chunk_scan
from jaxprune.kernels.ssd.reference import process_dt, ssd_chunked, ssd_sequential, ssd_step

__all__ = ["mamba_chunk_scan", "process_dt", "ssd_chunked", "ssd_sequential", "ssd_step"]
