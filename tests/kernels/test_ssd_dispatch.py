"""SSD implementation choice: "auto" takes only implementations verified on the backend, the
Mamba2 config carries the choice to the layer, and an unknown choice is a UserError."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxprune.config import Mamba2Config, MLPConfig, ModelConfig
from jaxprune.errors import UserError
from jaxprune.kernels.ssd import api
from jaxprune.kernels.ssd.api import VERIFIED, resolve_impl
from jaxprune.nn.model import HybridLM

pallas_available = pytest.mark.skipif(api.ssd_pallas is None, reason="no Pallas Triton module")


def test_auto_is_the_xla_scan_on_cpu():
    assert jax.default_backend() == "cpu"
    assert resolve_impl("auto") == "xla"


def test_auto_is_the_reference_on_a_gpu_until_pallas_is_verified(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_impl("auto") == "reference"
    assert resolve_impl("auto", "gpu") == "reference"
    assert "pallas" not in VERIFIED["gpu"]


@pallas_available
def test_auto_follows_the_verified_table(monkeypatch):
    monkeypatch.setitem(VERIFIED, "gpu", ("pallas", "reference"))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_impl("auto") == "pallas"
    assert resolve_impl("auto", "cpu") == "xla"
    assert resolve_impl("auto", "some_new_backend") == "reference"


def test_explicit_choices_pass_through():
    assert resolve_impl("reference") == "reference"
    assert resolve_impl("xla") == "xla"
    if api.ssd_pallas is not None:
        assert resolve_impl("pallas") == "pallas"


@pytest.mark.parametrize("bad", ["triton", "Pallas", ""])
def test_unknown_impl_is_a_user_error(bad):
    with pytest.raises(UserError, match="ssd impl must be one of"):
        resolve_impl(bad)
    with pytest.raises(UserError, match="ssd_impl"):
        Mamba2Config(num_heads=2, head_dim=4, state=4, ssd_impl=bad)


def _model(impl: str) -> HybridLM:
    mamba = Mamba2Config(num_heads=2, head_dim=4, state=4, chunk_size=8, ssd_impl=impl)
    cfg = ModelConfig.from_pattern("M-", vocab_size=17, hidden=8, mamba=mamba, mlp=MLPConfig(8))
    return HybridLM(cfg, rngs=nnx.Rngs(0))


@pallas_available
def test_the_layer_runs_the_configured_impl():
    """ssd_impl reaches the scan: "pallas" traces a pallas_call (run in the interpreter off a
    GPU), "auto" / "xla" / "reference" do not; all give the same logits ("auto" exactly those
    of the backend's first verified impl)."""
    tokens = np.arange(20, dtype=np.int32).reshape(1, 20) % 17
    logits, jaxprs = {}, {}
    for impl in ("auto", "xla", "reference", "pallas"):
        model = _model(impl)
        jaxprs[impl] = str(jax.make_jaxpr(lambda m=model: m(tokens))())
        logits[impl] = np.asarray(model(tokens))
    assert "pallas_call" in jaxprs["pallas"]
    assert "pallas_call" not in jaxprs["auto"]
    assert "pallas_call" not in jaxprs["reference"]
    np.testing.assert_allclose(logits["pallas"], logits["reference"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits["xla"], logits["reference"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits["auto"], logits[VERIFIED[jax.default_backend()][0]])
