"""Tiny random transformers models of every supported family, saved like save_pretrained does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

torch = None
T = None


def _imports():
    global torch, T
    import torch as _torch
    import transformers as _t

    torch, T = _torch, _t


def hf_config(family: str, **kw):
    _imports()
    common = dict(vocab_size=61, hidden_size=32)
    attn = dict(num_attention_heads=4, num_key_value_heads=2)
    if family == "nemotron_h":
        c = T.NemotronHConfig(
            **common,
            hybrid_override_pattern="M-*EM",
            **attn,
            head_dim=8,
            intermediate_size=40,
            mamba_num_heads=6,
            mamba_head_dim=4,
            ssm_state_size=5,
            n_groups=3,
            chunk_size=4,
            n_routed_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=12,
            moe_shared_expert_intermediate_size=20,
            n_group=2,
            topk_group=1,
            routed_scaling_factor=1.5,
        )
    elif family == "mamba2":
        c = T.Mamba2Config(
            **common,
            num_hidden_layers=2,
            num_heads=8,
            head_dim=8,
            expand=2,
            n_groups=2,
            state_size=6,
            chunk_size=4,
        )
    elif family == "llama":
        c = T.LlamaConfig(
            **common,
            num_hidden_layers=2,
            **attn,
            intermediate_size=40,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            },
            rope_theta=500.0,
        )
    elif family == "mistral":
        c = T.MistralConfig(
            **common, num_hidden_layers=2, **attn, intermediate_size=40, sliding_window=5
        )
    elif family == "qwen2":
        c = T.Qwen2Config(**common, num_hidden_layers=2, **attn, intermediate_size=40)
    elif family == "qwen3":
        c = T.Qwen3Config(**common, num_hidden_layers=2, **attn, intermediate_size=40, head_dim=8)
    elif family == "qwen3_moe":
        c = T.Qwen3MoeConfig(
            **common,
            num_hidden_layers=3,
            **attn,
            intermediate_size=40,
            head_dim=8,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=12,
            norm_topk_prob=True,
            mlp_only_layers=[1],
        )
    else:
        raise ValueError(family)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


FAMILIES = ("nemotron_h", "mamba2", "llama", "mistral", "qwen2", "qwen3", "qwen3_moe")


def random_model(family: str, seed: int = 0, **kw):
    """A model with every parameter (and the MoE correction bias) random, in eval mode."""
    _imports()
    torch.manual_seed(seed)
    m = T.AutoModelForCausalLM.from_config(hf_config(family, **kw)).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("dt_bias"):
                p.copy_(torch.randn_like(p) - 3.0)
            else:
                p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.2))
        for name, b in m.named_buffers():
            if "e_score_correction_bias" in name:
                b.copy_(0.1 * torch.randn_like(b))
    return m


def save(m, path: Path, **kw) -> Path:
    m.save_pretrained(path, **kw)
    return path


def logits(m, tokens: np.ndarray) -> np.ndarray:
    _imports()
    with torch.no_grad():
        return m(torch.as_tensor(tokens), use_cache=False).logits.float().numpy()


def nemotron_h_config(cfg):
    """A transformers ``NemotronHConfig`` with the shapes of a jaxprune ``ModelConfig``
    (for benchmarks against the PyTorch implementation)."""
    _imports()
    from jaxprune.converters.families.nemotron_h import config_to_hf

    d = config_to_hf(cfg, None, "nemotron_h")
    d["time_step_min"] = d["time_step_min"] or 1e-3  # only used by HF's dt init
    d.pop("model_type", None)
    d.pop("architectures", None)
    return T.NemotronHConfig(**d)


def safetensors_dict(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the ``*.safetensors`` files in an HF directory, by name."""
    from safetensors import safe_open

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(f, "np") as sf:
            out.update({k: sf.get_tensor(k) for k in sf.keys()})  # noqa: SIM118
    return out
