"""Parity with transformers: HF -> native logits, HF -> native -> HF round trips, export of
pruned shapes, Nemotron-H's dt clamp on prefill and decode."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.torch

import torch  # noqa: E402
import transformers  # noqa: E402

from jaxprune.config import Mamba2Config, MLPConfig, ModelConfig  # noqa: E402
from jaxprune.converters.api import convert, export, load_hf, load_model  # noqa: E402
from jaxprune.nn.model import init_model  # noqa: E402
from jaxprune.testing.hf_models import (  # noqa: E402
    FAMILIES,
    logits,
    random_model,
    safetensors_dict,
    save,
)

TOKENS = np.random.default_rng(0).integers(0, 61, size=(2, 11))


def _ours(model, tokens=TOKENS):
    return np.asarray(jax.jit(lambda m, t: m(t))(model, jnp.asarray(tokens)))


_tensors = safetensors_dict


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {f: save(random_model(f), root / f) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family, hf_dirs):
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dirs[family]).eval()
    model, meta = load_hf(hf_dirs[family])
    assert meta["family"] == family
    np.testing.assert_allclose(_ours(model), logits(hf, TOKENS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_native_hf_round_trip_is_bit_exact(family, hf_dirs, tmp_path):
    src = hf_dirs[family]
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    convert(src, tmp_path / "native")
    export(tmp_path / "native", tmp_path / "hf")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # source untouched
    a, b = _tensors(src), _tensors(tmp_path / "hf")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    cfg_a = json.loads((src / "config.json").read_text())
    cfg_b = json.loads((tmp_path / "hf" / "config.json").read_text())
    for key in ("model_type", "hidden_size", "vocab_size", "num_attention_heads"):
        assert cfg_a.get(key) == cfg_b.get(key), key
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    orig = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    np.testing.assert_array_equal(logits(hf, TOKENS), logits(orig, TOKENS))


def test_bf16_round_trip_and_sharded_checkpoints(tmp_path):
    # torch's bf16 grouped matmul wants 16-byte strides: expert width 16
    m = random_model("nemotron_h", seed=1, moe_intermediate_size=16).to(torch.bfloat16)
    src = save(m, tmp_path / "src", max_shard_size="20KB")
    assert (src / "model.safetensors.index.json").exists()
    convert(src, tmp_path / "native")
    export(tmp_path / "native", tmp_path / "out", dtype="bf16", shard_size=30_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    a, b = _tensors(src), _tensors(tmp_path / "out")
    assert sorted(a) == sorted(b)
    for k in a:
        assert b[k].dtype == a[k].dtype and np.array_equal(
            a[k].view(np.uint16), b[k].view(np.uint16)
        ), k
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.dtype == torch.bfloat16
    np.testing.assert_array_equal(logits(reloaded, TOKENS), logits(m, TOKENS))


def test_nemotron_dt_clamp_matches_prefill_and_decode(tmp_path):
    """transformers clamps dt >= time_step_min on prefill, not on one-token decode."""
    m = random_model("nemotron_h", seed=2)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("dt_bias"):  # many heads below time_step_min = 1e-3
                p.copy_(torch.linspace(-12.0, -2.0, p.numel()))
    src = save(m, tmp_path / "src")
    model, _ = load_hf(src)
    tokens = torch.as_tensor(TOKENS[:, :8])
    with torch.no_grad():
        out = m(tokens[:, :5], use_cache=True)
        hf_steps = [out.logits]
        cache = out.past_key_values
        for t in range(5, 8):
            out = m(tokens[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.past_key_values
            hf_steps.append(out.logits)
    hf_inc = torch.cat(hf_steps, 1).numpy()
    step = jax.jit(lambda m, t, c: m.step(t, c))
    lg, c = step(model, jnp.asarray(TOKENS[:, :5]), model.init_cache(2, 8))
    ours = [lg]
    for t in range(5, 8):
        lg, c = step(model, jnp.asarray(TOKENS[:, t : t + 1]), c)
        ours.append(lg)
    np.testing.assert_allclose(np.concatenate(ours, 1), hf_inc, atol=1e-4, rtol=0)
    # the clamp matters here: decode differs from the full (clamped) prefill
    full = logits(m, TOKENS[:, :8])
    assert np.abs(full[:, 5:] - hf_inc[:, 5:]).max() > 1e-3


def test_pruned_shapes_export_and_reload(tmp_path):
    """A model with new widths (H*P != expand*hidden) exports to a config transformers loads,
    and transformers reproduces jaxprune's logits."""
    mamba = Mamba2Config(
        num_heads=3,
        head_dim=5,
        state=4,
        n_groups=3,
        chunk_size=4,
        dt_limit=(1e-3, float("inf")),
        decode_dt_limit=(0.0, float("inf")),
    )
    cfg = ModelConfig.from_pattern(
        "M-M", vocab_size=61, hidden=24, mamba=mamba, mlp=MLPConfig(17), norm_eps=1e-5
    )
    model = init_model(cfg, seed=3)
    export(model, tmp_path / "hf", model_type="nemotron_h")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.mamba_num_heads == 3 and hf.config.intermediate_size == 17
    np.testing.assert_allclose(logits(hf, TOKENS), _ours(model), atol=1e-4, rtol=0)


def test_heterogeneous_widths_are_refused_naming_the_layers(tmp_path):
    layers = (MLPConfig(8), MLPConfig(12), MLPConfig(8))
    model = init_model(ModelConfig(vocab_size=11, hidden=8, layers=layers), 0)
    with pytest.raises(ValueError, match=r"layers 1 \(mlp"):
        export(model, tmp_path / "out", model_type="nemotron_h")
    assert not (tmp_path / "out").exists()


def test_pytorch_bin_and_legacy_config(tmp_path):
    m = random_model("nemotron_h", seed=4)
    src = save(m, tmp_path / "st")
    legacy = tmp_path / "bin"
    legacy.mkdir()
    state = {k: torch.as_tensor(v) for k, v in _tensors(src).items()}
    torch.save(state, legacy / "pytorch_model.bin")
    cfg = json.loads((src / "config.json").read_text())
    pattern = "".join(
        {"linear_attention": "M", "full_attention": "*", "mlp": "-", "moe": "E"}[t]
        for t in cfg.pop("layers_block_type")
    )
    cfg["hybrid_override_pattern"] = pattern
    cfg["mamba_n_groups"] = cfg.pop("n_groups")
    cfg["mamba_d_conv"] = cfg.pop("conv_kernel")
    cfg["time_step_limit"] = [0.0, float("inf")]
    (legacy / "config.json").write_text(json.dumps(cfg))  # writes a bare Infinity
    assert "Infinity" in (legacy / "config.json").read_text()
    model, _ = load_model(legacy)
    np.testing.assert_allclose(_ours(model), logits(m, TOKENS), atol=1e-4, rtol=0)


def test_per_layer_mlp_widths_only_as_an_explicit_option(tmp_path):
    mamba = Mamba2Config(
        num_heads=2,
        head_dim=4,
        state=4,
        n_groups=1,
        chunk_size=4,
        dt_limit=(1e-3, float("inf")),
        decode_dt_limit=(0.0, float("inf")),
    )
    layers = (mamba, MLPConfig(8), mamba, MLPConfig(12))
    model = init_model(ModelConfig(vocab_size=11, hidden=8, layers=layers), 0)
    with pytest.raises(ValueError, match=r"layers 3 \(mlp, differs from layer 1\)"):
        export(model, tmp_path / "strict", model_type="nemotron_h")
    export(model, tmp_path / "vllm", model_type="nemotron_h", per_layer_mlp=True)
    cfg = json.loads((tmp_path / "vllm" / "config.json").read_text())
    assert cfg["intermediate_size"] == [8, 12]
    with pytest.raises(ValueError, match="only be written for nemotron_h"):
        export(model, tmp_path / "llama", model_type="llama", per_layer_mlp=True)


@pytest.mark.parametrize("family", ["nemotron_h", "qwen3_moe"])
def test_fused_expert_tensors_load_like_per_expert_ones(family, hf_dirs, tmp_path):
    """transformers keeps experts fused in memory ((E, F, d), Qwen's gate_up (E, 2F, d));
    checkpoints written that way convert to the same model."""
    import re

    from safetensors.numpy import save_file

    src = hf_dirs[family]
    tensors = _tensors(src)
    fused: dict[str, np.ndarray] = {}
    per = re.compile(r"^(.*\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")
    groups: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for k, v in tensors.items():
        m = per.match(k)
        if m:
            groups.setdefault((m[1], m[3]), {})[int(m[2])] = v
        else:
            fused[k] = v
    prefixes = {p for p, _ in groups}
    for p in prefixes:
        stack = {
            n: np.stack([groups[(p, n)][j] for j in sorted(groups[(p, n)])])
            for n in ("gate", "up", "down")
            if (p, n) in groups
        }
        if "gate" in stack:
            fused[f"{p}.gate_up_proj"] = np.concatenate([stack["gate"], stack["up"]], axis=1)
        else:
            fused[f"{p}.up_proj"] = stack["up"]
        fused[f"{p}.down_proj"] = stack["down"]
    dst = tmp_path / "fused"
    dst.mkdir()
    save_file(fused, str(dst / "model.safetensors"))
    (dst / "config.json").write_text((src / "config.json").read_text())
    a, _ = load_hf(src)
    b, _ = load_hf(dst)
    np.testing.assert_array_equal(_ours(a), _ours(b))
