"""A persistent compilation cache for this directory's tests: every ``run`` builds new jitted
functions for the same few shapes, and the subprocess workers share the cache too."""

import os
import shutil
import tempfile

import jax
import pytest

_CACHE = tempfile.mkdtemp(prefix="jaxprune-train-jit-")


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache():
    old = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    _reset()  # jax decides once per process whether the cache is on
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
    _reset()
    shutil.rmtree(_CACHE, ignore_errors=True)


def _reset() -> None:
    try:
        from jax._src import compilation_cache
    except ImportError:
        return
    compilation_cache.reset_cache()
