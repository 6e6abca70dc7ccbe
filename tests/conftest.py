"""Test setup: 8 fake CPU devices (for sharding tests); the shared tiny model configs live
in ``jaxprune.testing.configs``."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# rbg keys compile far faster than threefry on CPU; tests compare implementations, never
# absolute random values.
jax.config.update("jax_default_prng_impl", "rbg")

from jaxprune.config import ModelConfig  # noqa: E402
from jaxprune.testing.configs import hybrid_config, llama_config  # noqa: E402


@pytest.fixture
def hybrid_cfg() -> ModelConfig:
    return hybrid_config()


@pytest.fixture
def llama_cfg() -> ModelConfig:
    return llama_config()
