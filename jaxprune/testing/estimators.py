"""A direct numpy (float64) transcription of the model and the Minitron estimator, for tests.

Nothing here calls jaxprune's model code, taps or importance module: :func:`forward` re-does
the hybrid stack in numpy from the flat parameters and returns the activations the
estimator reads; :func:`estimator_scores` reduces them as /work/shared/reference/minitron.md
(sec. 1-3) describes; :func:`estimator_keep` turns scores and HF-named targets into kept
indices (ascending, as ``pruning.prune.plan`` returns them). Tests compare the library
against these index for index.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig, MoEConfig

Params = dict[str, np.ndarray]


def flat_params(model: nnx.Module) -> Params:
    """{dotted path: float64 array} of every variable of an nnx model."""
    return {
        ".".join(map(str, p)): np.asarray(v.get_value(), np.float64)
        for p, v in nnx.to_flat_state(nnx.state(model))
    }


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _rope(x: np.ndarray, theta: float, rotary_dim: int | None) -> np.ndarray:
    """Rotate-half RoPE on the first ``rotary_dim`` dims; x (b, T, H, D), positions 0..T-1."""
    rd = rotary_dim or x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, rd, 2) / rd)
    ang = np.arange(x.shape[1])[:, None] * inv  # (T, rd/2)
    cos, sin = np.cos(ang)[None, :, None], np.sin(ang)[None, :, None]
    x1, x2 = x[..., : rd // 2], x[..., rd // 2 : rd]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., rd:]], -1)


def attention(cfg: AttentionConfig, p: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (b, T, d) -> (output (b, T, d), per-head o_proj input (b, T, Hq, D))."""
    q = np.einsum("btd,dhk->bthk", x, p["q_proj"])
    k = np.einsum("btd,dhk->bthk", x, p["k_proj"])
    v = np.einsum("btd,dhk->bthk", x, p["v_proj"])
    if cfg.qkv_bias:
        q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
    if cfg.qk_norm:
        q, k = _rms(q, p["q_norm"], cfg.norm_eps), _rms(k, p["k_norm"], cfg.norm_eps)
    if cfg.rope is not None:
        if cfg.rope.scaling != "default":
            raise ValueError("the numpy reference covers default RoPE only")
        q, k = (
            _rope(q, cfg.rope.theta, cfg.rope.rotary_dim),
            _rope(k, cfg.rope.theta, cfg.rope.rotary_dim),
        )
    r = cfg.num_heads // cfg.num_kv_heads
    k, v = np.repeat(k, r, axis=2), np.repeat(v, r, axis=2)  # query head h reads kv h // r
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(cfg.head_dim)
    t = x.shape[1]
    qi, ki = np.arange(t)[:, None], np.arange(t)[None, :]
    allowed = ki <= qi
    if cfg.sliding_window is not None:
        allowed &= ki > qi - cfg.sliding_window
    s = np.where(allowed, s, -np.inf)
    out = np.einsum("bhqk,bkhd->bqhd", _softmax(s), v)
    y = np.einsum("bthk,hkd->btd", out, p["o_proj"])
    return (y + p["o_bias"] if cfg.out_bias else y), out


def mlp(cfg: MLPConfig, p: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (..., d) -> (output, down-projection input (..., F))."""
    up = x @ p["up_proj"] + (p["up_bias"] if cfg.bias else 0.0)
    if cfg.activation == "relu2":
        h = np.maximum(up, 0.0) ** 2
    else:
        h = _silu(x @ p["gate_proj"] + (p["gate_bias"] if cfg.bias else 0.0)) * up
    return h @ p["down_proj"] + (p["down_bias"] if cfg.bias else 0.0), h


def mamba2(cfg: Mamba2Config, p: Params, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u (b, T, d) -> (output (b, T, d), in_proj's x slice (b, T, H, P)), sequential scan."""
    b, t, _ = u.shape
    h, hp, n, g, kk = cfg.num_heads, cfg.head_dim, cfg.state, cfg.n_groups, cfg.conv_kernel

    def proj(name: str) -> np.ndarray:
        y = np.einsum("btd,d...->bt...", u, p[name])
        return y + p[name + "_bias"] if cfg.proj_bias else y

    z, x_in, dt_raw = proj("z_proj"), proj("x_proj"), proj("dt_proj")
    xbc = np.concatenate(
        [
            x_in.reshape(b, t, -1),
            proj("B_proj").reshape(b, t, -1),
            proj("C_proj").reshape(b, t, -1),
        ],
        -1,
    )
    w = np.concatenate([p[c].reshape(kk, -1) for c in ("conv_x", "conv_B", "conv_C")], -1)
    padded = np.concatenate([np.zeros((b, kk - 1, xbc.shape[-1])), xbc], 1)
    conv = sum(padded[:, j : j + t] * w[j] for j in range(kk))
    if cfg.conv_bias:
        conv = conv + np.concatenate(
            [p[c].reshape(-1) for c in ("conv_x_bias", "conv_B_bias", "conv_C_bias")]
        )
    conv = _silu(conv)
    x = conv[..., : h * hp].reshape(b, t, h, hp)
    B = conv[..., h * hp : h * hp + g * n].reshape(b, t, g, n)
    C = conv[..., h * hp + g * n :].reshape(b, t, g, n)
    dt = np.clip(_softplus(dt_raw + p["dt_bias"]), *cfg.dt_limit)  # (b, T, H)
    A = -np.exp(p["A_log"])
    grp = np.arange(h) // (h // g)  # head -> its B / C group
    state = np.zeros((b, h, hp, n))
    ys = []
    for s in range(t):
        decay = np.exp(dt[:, s] * A)  # (b, H)
        upd = dt[:, s, :, None, None] * x[:, s, :, :, None] * B[:, s, grp][:, :, None, :]
        state = decay[:, :, None, None] * state + upd
        y = np.einsum("bhpn,bhn->bhp", state, C[:, s, grp]) + p["D"][:, None] * x[:, s]
        ys.append(y)
    y = np.stack(ys, 1) * _silu(z)  # (b, T, H, P), gate before the norm
    r = h // g
    yg = y.reshape(b, t, g, r * hp)
    yg = _rms(yg, p["norm"].reshape(g, r * hp), cfg.norm_eps).reshape(b, t, h, hp)
    out = np.einsum("bthp,hpd->btd", yg, p["out_proj"])
    return (out + p["out_proj_bias"] if cfg.proj_bias else out), x_in


def _route(cfg: MoEConfig, p: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (n, d) -> (weights (n, k), expert ids (n, k))."""
    logits = x @ p["router"]
    e, k = cfg.num_experts, cfg.top_k
    if cfg.router == "softmax":
        probs = _softmax(logits)
        idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        w = np.take_along_axis(probs, idx, -1)
        if cfg.norm_topk_prob:
            w = w / w.sum(-1, keepdims=True)
        return w * cfg.routed_scaling_factor, idx
    scores = 1.0 / (1.0 + np.exp(-logits))
    select = scores + p["correction_bias"]
    if cfg.topk_group < cfg.n_group:
        size = e // cfg.n_group
        grouped = np.sort(select.reshape(-1, cfg.n_group, size), -1)[..., ::-1]
        gscore = grouped[..., : min(2, size)].sum(-1)
        keep = np.argsort(-gscore, axis=-1, kind="stable")[:, : cfg.topk_group]
        allowed = np.zeros_like(gscore, bool)
        np.put_along_axis(allowed, keep, True, -1)
        select = np.where(np.repeat(allowed, size, -1), select, -np.inf)
    idx = np.argsort(-select, axis=-1, kind="stable")[:, :k]
    w = np.take_along_axis(scores, idx, -1)
    if cfg.norm_topk_prob:
        w = w / (w.sum(-1, keepdims=True) + 1e-20)
    return w * cfg.routed_scaling_factor, idx


def moe(cfg: MoEConfig, p: Params, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """x (b, T, d) -> (output, {"assign": [(token, expert, hidden (F,), out (d,))],
    "shared_mlp": shared expert hidden (b, T, F_s) or absent})."""
    if cfg.latent:
        raise ValueError("the numpy reference covers no latent MoE")
    b, t, d = x.shape
    flat = x.reshape(b * t, d)
    w, idx = _route(cfg, p, flat)
    out = np.zeros_like(flat)
    assign = []
    for tok in range(b * t):
        for j in range(cfg.top_k):
            e = int(idx[tok, j])
            ep = {"up_proj": p["up_proj"][e], "down_proj": p["down_proj"][e]}
            if cfg.activation == "swiglu":
                ep["gate_proj"] = p["gate_proj"][e]
            y, hid = mlp(MLPConfig(cfg.intermediate, cfg.activation), ep, flat[tok])
            out[tok] += w[tok, j] * y
            assign.append((tok, e, hid, y))
    acts: dict = {"assign": assign}
    y = out.reshape(b, t, d)
    if cfg.shared_intermediate:
        sp = {k[len("shared.") :]: v for k, v in p.items() if k.startswith("shared.")}
        ys, hs = mlp(MLPConfig(cfg.shared_intermediate, cfg.activation), sp, x)
        y, acts["shared_mlp"] = y + ys, hs
    return y, acts


def forward(cfg: ModelConfig, params: Params, tokens: np.ndarray) -> tuple[np.ndarray, dict]:
    """tokens (b, T) -> (logits (b, T, V), activations): per block i ``blocks.<i>.hidden``
    (normed input), ``.io`` (h_in, h_out), and the mixer's ``.mlp`` / ``.heads`` /
    ``.mamba_x`` / ``.moe`` (see :func:`moe`); ``final_hidden``."""
    h = params["embed"][np.asarray(tokens)]
    acts: dict = {}
    mixers = {MLPConfig: mlp, AttentionConfig: attention, Mamba2Config: mamba2, MoEConfig: moe}
    names = {MLPConfig: "mlp", AttentionConfig: "heads", Mamba2Config: "mamba_x", MoEConfig: "moe"}
    for i, layer in enumerate(cfg.layers):
        pre = f"blocks.{i}."
        sub = {
            k[len(pre + "mixer.") :]: v for k, v in params.items() if k.startswith(pre + "mixer.")
        }
        x = _rms(h, params[pre + "norm.weight"], cfg.norm_eps)
        y, a = mixers[type(layer)](layer, sub, x)
        acts[pre + "hidden"], acts[pre + names[type(layer)]] = x, a
        acts[pre + "io"] = (h, h + y)
        h = h + y
    hf = _rms(h, params["final_norm.weight"], cfg.norm_eps)
    acts["final_hidden"] = hf
    head = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
    return hf @ head, acts


def reduce(a: np.ndarray, valid: np.ndarray, aggregation: str) -> np.ndarray:
    """One channel score per trailing index of a (N, T, ...) over the valid (N, T) tokens.

    l2: sqrt(sum over samples of (mean over its tokens of |a|)^2); mean: the mean over
    samples (with any valid token) of that per-sample mean; mean_sq: E_tokens[a^2]."""
    v = valid.reshape(valid.shape + (1,) * (a.ndim - 2)).astype(np.float64)
    if aggregation == "mean_sq":
        return (a * a * v).sum((0, 1)) / max(valid.sum(), 1)
    rows = valid.any(1)
    per = (np.abs(a) * v).sum(1)[rows] / valid.sum(1)[rows].reshape((-1,) + (1,) * (a.ndim - 2))
    if aggregation == "l2":
        return np.sqrt((per**2).sum(0))
    if aggregation == "mean":
        return per.mean(0)
    raise ValueError(aggregation)


def estimator_scores(
    cfg: ModelConfig, params: Params, tokens: np.ndarray, valid: np.ndarray, aggregation: str
) -> dict[str, np.ndarray]:
    """Group scores, named like ``pruning.importance.scores``, from the numpy forward."""
    _, acts = forward(cfg, params, tokens)
    flat_valid = valid.reshape(-1)
    out = {"hidden": reduce(acts["final_hidden"], valid, aggregation)}
    bi = []
    for i, layer in enumerate(cfg.layers):
        b = f"blocks.{i}."
        out["hidden"] = out["hidden"] + reduce(acts[b + "hidden"], valid, aggregation)
        if isinstance(layer, MLPConfig):
            out[b + "mlp"] = reduce(acts[b + "mlp"], valid, aggregation)
        elif isinstance(layer, AttentionConfig):  # L2 over head_dim of the per-channel score
            out[b + "heads"] = np.sqrt((reduce(acts[b + "heads"], valid, aggregation) ** 2).sum(-1))
        elif isinstance(layer, Mamba2Config):
            out[b + "mamba"] = reduce(acts[b + "mamba_x"], valid, aggregation)  # (H, P)
        else:
            rows = [(e, hid, y) for tok, e, hid, y in acts[b + "moe"]["assign"] if flat_valid[tok]]
            norm_sum, count = np.zeros(layer.num_experts), np.zeros(layer.num_experts)
            for e, _, y in rows:
                norm_sum[e] += np.linalg.norm(y)
                count[e] += 1
            out[b + "experts"] = norm_sum / (count + 1e-8)  # mean per-token L2 of the output
            out[b + "expert_mlp"] = np.mean([np.abs(hid) for _, hid, _ in rows], axis=0)
            if layer.shared_intermediate:
                out[b + "shared_mlp"] = reduce(acts[b + "moe"]["shared_mlp"], valid, aggregation)
        h_in, h_out = acts[b + "io"]
        cos = (h_in * h_out).sum(-1) / (
            np.linalg.norm(h_in, axis=-1) * np.linalg.norm(h_out, axis=-1)
        )
        bi.append(((1 - cos) * valid).sum() / valid.sum())
    out["depth_block_influence"] = np.array(bi)
    return out


def _top(score: np.ndarray, k: int) -> np.ndarray:
    """The k highest scores (ties: lower index first), as ascending indices."""
    order = sorted(range(len(score)), key=lambda j: (-float(score[j]), j))
    return np.array(sorted(order[:k]), dtype=int)


def _top_each(score: np.ndarray, n: int, k: int) -> np.ndarray:
    size = len(score) // n
    return np.concatenate([g * size + _top(score[g * size : (g + 1) * size], k) for g in range(n)])


def estimator_keep(cfg: ModelConfig, scores: dict, targets: dict) -> dict[str, np.ndarray]:
    """Kept indices per group for uniform ``targets`` (HF names), as the reference ranks:

    * hidden / MLP / expert MLP / shared MLP: the top scores;
    * attention heads: the top ``H'/G_kv`` within each query group; with
      ``num_key_value_heads``: KV groups by the summed score of their contiguous query heads,
      then the top heads within each kept group;
    * Mamba: channels by the L2 over heads of the (H, P) score, then heads by the L2 over the
      kept channels, the top ``H'/G`` within each of the n_groups contiguous groups;
    * experts: the top ``E'/n_group`` within each routing group;
    * ``num_hidden_layers``: drop the blocks with the lowest block influence.
    """
    t, kept = targets, {}
    if "hidden_size" in t:
        kept["hidden"] = _top(scores["hidden"], t["hidden_size"])
    for i, layer in enumerate(cfg.layers):
        b = f"blocks.{i}."
        if isinstance(layer, MLPConfig) and "intermediate_size" in t:
            kept[b + "mlp"] = _top(scores[b + "mlp"], t["intermediate_size"])
        elif isinstance(layer, AttentionConfig):
            s, g, r = scores[b + "heads"], layer.num_kv_heads, layer.num_heads // layer.num_kv_heads
            kv = t.get("num_key_value_heads", g)
            heads = t.get("num_attention_heads", layer.num_heads * kv // g)
            if kv != g:
                group_score = np.array([s[j * r : (j + 1) * r].sum() for j in range(g)])
                groups = _top(group_score, kv)
                kept[b + "kv_heads"] = groups
                kept[b + "heads"] = np.concatenate(
                    [j * r + _top(s[j * r : (j + 1) * r], heads // kv) for j in groups]
                )
            elif "num_attention_heads" in t:
                kept[b + "heads"] = _top_each(s, g, heads // g)
        elif isinstance(layer, Mamba2Config) and ("mamba_num_heads" in t or "mamba_head_dim" in t):
            s = scores[b + "mamba"]
            channels = _top(np.sqrt((s**2).sum(0)), t.get("mamba_head_dim", layer.head_dim))
            head_score = np.sqrt((s[:, channels] ** 2).sum(1))
            heads = t.get("mamba_num_heads", layer.num_heads)
            kept[b + "mamba_heads"] = _top_each(head_score, layer.n_groups, heads // layer.n_groups)
            kept[b + "mamba_channels"] = channels
        elif isinstance(layer, MoEConfig):
            if "n_routed_experts" in t:
                e = t["n_routed_experts"]
                kept[b + "experts"] = _top_each(
                    scores[b + "experts"], layer.n_group, e // layer.n_group
                )
            if "moe_intermediate_size" in t:
                kept[b + "expert_mlp"] = _top(scores[b + "expert_mlp"], t["moe_intermediate_size"])
            if "moe_shared_expert_intermediate_size" in t and layer.shared_intermediate:
                kept[b + "shared_mlp"] = _top(
                    scores[b + "shared_mlp"], t["moe_shared_expert_intermediate_size"]
                )
    if t.get("num_hidden_layers", len(cfg.layers)) < len(cfg.layers):
        bi = scores["depth_block_influence"]
        drop = set(_top(-bi, len(cfg.layers) - t["num_hidden_layers"]).tolist())
        kept["depth"] = np.array([i for i in range(len(cfg.layers)) if i not in drop])
    return kept
