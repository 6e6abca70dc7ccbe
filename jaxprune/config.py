"""Model configuration: one small frozen dataclass per block type, plus the stack.

A model is a list of blocks, each ``h <- h + mixer(RMSNorm(h))`` with exactly one mixer:

====  ==================  =====================
char  mixer               config
====  ==================  =====================
M     Mamba2              :class:`Mamba2Config`
\\*   attention           :class:`AttentionConfig`
\\-   MLP                 :class:`MLPConfig`
E     mixture of experts  :class:`MoEConfig`
====  ==================  =====================

Every block carries its own config, so a pruned model may have different widths in every
layer. A Llama-style decoder layer is two blocks, ``*`` then ``-``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from jaxprune.errors import UserError

INF = float("inf")

#: SSD scan implementations (`jaxprune.kernels.ssd.mamba_chunk_scan`'s ``impl``): "auto" picks
#: one verified on the running backend (`jaxprune.kernels.ssd.api.VERIFIED`).
SSD_IMPLS = ("auto", "xla", "reference", "pallas")
#: Attention implementations (`jaxprune.ops.attention.dot_product_attention`'s ``impl``).
ATTN_IMPLS = ("auto", "reference", "blockwise", "cudnn")
#: Per-layer fields that choose how a block is computed, not what it computes: kept out of
#: :meth:`ModelConfig.architecture_dict`.
IMPLEMENTATION_FIELDS = ("ssd_impl", "attn_impl")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding (HF rotate-half convention).

    ``rotary_dim`` < head_dim gives partial rotary; ``scaling="llama3"`` applies Llama-3.1's
    frequency-dependent wavelength scaling.
    """

    theta: float = 10000.0
    rotary_dim: int | None = None
    scaling: Literal["default", "llama3"] = "default"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclass(frozen=True)
class DMCConfig:
    """Dynamic Memory Compression of an attention block's KV cache (arXiv 2403.09636).

    Per KV head and token the block reads an append-or-merge decision from the last
    dimension of the key, ``alpha = k[D-1] - init_val > 0``, and an importance weight from
    the last dimension of the queries of its group, ``omega = sigmoid(mean q[D-1] +
    init_val)``; that dimension is then zeroed in q and k before RoPE (RoPE then rotates its
    partner into it, exactly as for q/k weights zeroed there), so the checkpoint keeps its
    shapes (``jaxprune.dmc.retrofit`` zeroes its q/k weights, giving
    alpha ~ sigmoid(-c) and omega ~ sigmoid(c) at the start of a retrofit). A merge makes
    the last cache slot the omega-weighted mean of the keys / values merged into it.
    """

    init_val: float = 5.0

    def __post_init__(self):
        object.__setattr__(self, "init_val", float(self.init_val))


@dataclass(frozen=True)
class AttentionConfig:
    """Causal multi-head / grouped-query attention; query head h reads KV head h // (Hq/Hkv).

    ``sliding_window`` W lets a query see only the W most recent keys (itself included),
    as transformers' Mistral / Qwen2 do.

    ``attn_impl`` chooses how it is computed (one of :data:`ATTN_IMPLS`, see
    `jaxprune.ops.attention.select_impl`): "auto" takes cuDNN on a GPU where it applies, the
    blockwise kernel for long contexts, else the reference.

    ``dmc``: a :class:`DMCConfig` makes the block compress its KV cache (None: plain).
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope: RopeConfig | None = None
    qk_norm: bool = False
    qkv_bias: bool = False
    out_bias: bool = False
    norm_eps: float = 1e-6
    sliding_window: int | None = None
    attn_impl: Literal["auto", "reference", "blockwise", "cudnn"] = "auto"
    dmc: DMCConfig | None = None

    kind = "attention"
    char = "*"

    def __post_init__(self):
        _positive(self, "num_heads", "num_kv_heads", "head_dim")
        _choice(self, "attn_impl", ATTN_IMPLS)
        if self.num_heads % self.num_kv_heads:
            raise UserError(
                f"attention: num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.rope is not None:
            rd = self.rope.rotary_dim or self.head_dim
            if rd % 2 or rd > self.head_dim:
                raise UserError(f"attention: rotary_dim={rd} must be even and <= head_dim")
        if self.dmc is not None:
            if self.sliding_window is not None:
                raise UserError("attention: DMC does not combine with a sliding window")
            if self.head_dim < 2:
                raise UserError("attention: DMC needs head_dim >= 2 (it repurposes one dim)")


@dataclass(frozen=True)
class MLPConfig:
    """Feed-forward block: ``relu2`` is down(relu(up x)^2) (Nemotron-H); ``swiglu`` is
    down(silu(gate x) * up x) (Llama family)."""

    intermediate: int
    activation: Literal["relu2", "swiglu"] = "relu2"
    bias: bool = False

    kind = "mlp"
    char = "-"

    def __post_init__(self):
        _positive(self, "intermediate")
        _choice(self, "activation", ("relu2", "swiglu"))


@dataclass(frozen=True)
class Mamba2Config:
    """Mamba2 mixer. Intermediate width I = num_heads * head_dim; conv over [x | B | C].

    ``dt_limit`` clamps dt after softplus. ``decode_dt_limit`` (None: the same) is the clamp
    of the one-token decode step; transformers' NemotronH clamps prefill at time_step_min
    but not decode, and a converted model reproduces that.

    ``ssd_impl`` chooses the SSD scan (one of :data:`SSD_IMPLS`): "auto" takes an
    implementation verified on the running backend ("xla", the faster pure-JAX scan, on CPU;
    the pure-JAX reference elsewhere), "pallas" opts into the Pallas kernel, which has not
    yet been checked on a GPU.
    """

    num_heads: int
    head_dim: int
    state: int
    n_groups: int = 1
    conv_kernel: int = 4
    chunk_size: int = 128
    conv_bias: bool = True
    proj_bias: bool = False
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_floor: float = 1e-4
    dt_limit: tuple[float, float] = (0.0, INF)
    decode_dt_limit: tuple[float, float] | None = None
    norm_eps: float = 1e-5
    ssd_impl: Literal["auto", "xla", "reference", "pallas"] = "auto"

    kind = "mamba2"
    char = "M"

    def __post_init__(self):
        _positive(self, "num_heads", "head_dim", "state", "n_groups", "conv_kernel", "chunk_size")
        _choice(self, "ssd_impl", SSD_IMPLS)
        if self.num_heads % self.n_groups:
            raise UserError(
                f"mamba2: num_heads={self.num_heads} is not a multiple of n_groups={self.n_groups}"
            )
        object.__setattr__(self, "dt_limit", tuple(float(v) for v in self.dt_limit))
        if self.decode_dt_limit is not None:
            limit = tuple(float(v) for v in self.decode_dt_limit)
            object.__setattr__(self, "decode_dt_limit", limit)

    @property
    def intermediate(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.intermediate + 2 * self.n_groups * self.state


@dataclass(frozen=True)
class MoEConfig:
    """Routed experts plus an optional shared expert.

    ``router="sigmoid"``: sigmoid scores, score-correction bias for selection only,
    group-limited top-k (Nemotron-H, DeepSeek-V3). ``router="softmax"``: softmax top-k
    (Qwen3-MoE, Mixtral). ``latent`` projects tokens d -> latent before the experts.
    """

    num_experts: int
    top_k: int
    intermediate: int
    activation: Literal["relu2", "swiglu"] = "relu2"
    router: Literal["sigmoid", "softmax"] = "sigmoid"
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    shared_intermediate: int = 0
    latent: int | None = None
    dispatch: Literal["sorted", "dense"] = "sorted"

    kind = "moe"
    char = "E"

    def __post_init__(self):
        _positive(self, "num_experts", "top_k", "intermediate", "n_group", "topk_group")
        _choice(self, "activation", ("relu2", "swiglu"))
        _choice(self, "router", ("sigmoid", "softmax"))
        _choice(self, "dispatch", ("sorted", "dense"))
        if self.top_k > self.num_experts:
            raise UserError(f"moe: top_k={self.top_k} > num_experts={self.num_experts}")
        if self.num_experts % self.n_group or self.topk_group > self.n_group:
            raise UserError(
                f"moe: num_experts={self.num_experts} must split into n_group={self.n_group} "
                f"groups and topk_group={self.topk_group} <= n_group"
            )
        if self.topk_group * (self.num_experts // self.n_group) < self.top_k:
            raise UserError("moe: topk_group groups hold fewer than top_k experts")


LayerConfig = Mamba2Config | AttentionConfig | MLPConfig | MoEConfig
LAYER_TYPES: dict[str, type] = {
    c.char: c for c in (Mamba2Config, AttentionConfig, MLPConfig, MoEConfig)
}
_BY_KIND: dict[str, type] = {c.kind: c for c in LAYER_TYPES.values()}


@dataclass(frozen=True)
class ModelConfig:
    """A hybrid stack: embeddings, ``layers`` (pre-norm residual blocks), final norm, LM head.

    ``dtype`` is the compute dtype; parameters are stored in ``param_dtype``. Norms, the SSD
    scan, softmax and the logits are computed in fp32 whatever ``dtype`` is.
    """

    vocab_size: int
    hidden: int
    layers: tuple[LayerConfig, ...]
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    initializer_range: float = 0.02
    name: str = field(default="hybrid", compare=False)

    def __post_init__(self):
        _positive(self, "vocab_size", "hidden")
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise UserError("model: at least one layer is required")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, tuple(LAYER_TYPES.values())):
                raise UserError(f"model: layer {i} has unsupported config {type(layer).__name__}")

    @property
    def pattern(self) -> str:
        """The block pattern string, e.g. ``"M-M*-"``."""
        return "".join(layer.char for layer in self.layers)

    @classmethod
    def from_pattern(
        cls,
        pattern: str,
        *,
        vocab_size: int,
        hidden: int,
        mamba: Mamba2Config | None = None,
        attention: AttentionConfig | None = None,
        mlp: MLPConfig | None = None,
        moe: MoEConfig | None = None,
        **kwargs: Any,
    ) -> ModelConfig:
        """Build a homogeneous stack from a pattern of ``M``, ``*``, ``-``, ``E``.

        Megatron-style ``|`` separators are ignored.
        """
        given = {"M": mamba, "*": attention, "-": mlp, "E": moe}
        layers = []
        for i, ch in enumerate(pattern.replace("|", "")):
            if ch not in given:
                raise UserError(f"pattern {pattern!r}: unknown block {ch!r} at {i} (use M * - E)")
            if given[ch] is None:
                name = LAYER_TYPES[ch].__name__
                raise UserError(f"pattern {pattern!r} has {ch!r} blocks but no {name} was given")
            layers.append(given[ch])
        return cls(vocab_size=vocab_size, hidden=hidden, layers=tuple(layers), **kwargs)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``inf`` stays a float: write it with ``allow_nan``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "layers"}
        d["layers"] = [_layer_dict(layer) for layer in self.layers]
        return d

    def architecture_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the :data:`IMPLEMENTATION_FIELDS` (what the model computes,
        e.g. for a digest that should not change with the kernel choice)."""
        d = self.to_dict()
        d["layers"] = [
            {k: v for k, v in layer.items() if k not in IMPLEMENTATION_FIELDS}
            for layer in d["layers"]
        ]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; fields added since a config was written take their
        defaults (e.g. ``ssd_impl="auto"``)."""
        d = dict(d)
        layers = []
        for i, raw in enumerate(d.pop("layers")):
            raw = dict(raw)
            kind = raw.pop("kind", None)
            if kind not in _BY_KIND:
                raise UserError(f"model config: layer {i} has unknown kind {kind!r}")
            if kind == "attention" and raw.get("rope") is not None:
                raw["rope"] = RopeConfig(**raw["rope"])
            if kind == "attention" and raw.get("dmc") is not None:
                raw["dmc"] = DMCConfig(**raw["dmc"])
            for key in ("dt_limit", "decode_dt_limit"):
                if kind == "mamba2" and raw.get(key) is not None:
                    raw[key] = tuple(raw[key])
            layers.append(_BY_KIND[kind](**raw))
        return cls(layers=tuple(layers), **d)


# optional fields added after configs (and the study's cache keys) were first written:
# left out of ``to_dict`` while unset, so a plain model's dict and digest stay the same
_OMIT_WHEN_NONE = frozenset({"dmc"})


def _layer_dict(layer: Any) -> dict[str, Any]:
    d = {"kind": layer.kind, **dataclasses.asdict(layer)}
    return {k: v for k, v in d.items() if not (k in _OMIT_WHEN_NONE and v is None)}


def _positive(cfg: Any, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise UserError(f"{type(cfg).__name__}.{n} must be a positive int, got {v!r}")


def _choice(cfg: Any, name: str, options: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in options:
        raise UserError(f"{type(cfg).__name__}.{name}={v!r}; expected one of {options}")
