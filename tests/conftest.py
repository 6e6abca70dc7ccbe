"""Test setup: 8 fake CPU devices (for sharding tests); the shared tiny model configs live
in ``jaxprune.testing.configs``."""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# rbg keys compile far faster than threefry on CPU; tests compare implementations, never
# absolute random values.
jax.config.update("jax_default_prng_impl", "rbg")
# Many tests compile the same tiny programs (a train step, a forward) afresh: one on-disk
# compilation cache per test session serves the repeats. JAXPRUNE_TEST_JAX_CACHE=0: off.
_OWN_CACHE = None
if os.environ.get("JAXPRUNE_TEST_JAX_CACHE", "1") != "0":
    _cache = os.environ.get("JAXPRUNE_TEST_JAX_CACHE_DIR")
    if _cache is None:  # the first process (xdist workers inherit the variable)
        _cache = _OWN_CACHE = tempfile.mkdtemp(prefix="jaxprune-test-jit-")
        os.environ["JAXPRUNE_TEST_JAX_CACHE_DIR"] = _cache
    # the commands the tests start as subprocesses read the same directory
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


from jaxprune.config import ModelConfig  # noqa: E402
from jaxprune.testing.configs import hybrid_config, llama_config  # noqa: E402


@pytest.fixture
def hybrid_cfg() -> ModelConfig:
    return hybrid_config()


@pytest.fixture
def llama_cfg() -> ModelConfig:
    return llama_config()
