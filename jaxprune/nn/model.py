"""The hybrid language model: embeddings, pre-norm residual blocks, final norm, LM head."""

from __future__ import annotations

from collections.abc import Collection

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.config import (
    AttentionConfig,
    LayerConfig,
    Mamba2Config,
    MLPConfig,
    ModelConfig,
    MoEConfig,
)
from jaxprune.nn.attention import Attention
from jaxprune.nn.cache import Cache, DMCCache, KVCache, MambaCache
from jaxprune.nn.dmc import Relaxation
from jaxprune.nn.init import normal, param
from jaxprune.nn.mamba2 import Mamba2
from jaxprune.nn.mlp import MLP
from jaxprune.nn.moe import MoE
from jaxprune.nn.norms import RMSNorm
from jaxprune.nn.taps import BlockInput, BlockIO, FinalHidden, Tap, at_block

Mixer = Mamba2 | Attention | MLP | MoE
_MIXERS = {Mamba2Config: Mamba2, AttentionConfig: Attention, MLPConfig: MLP, MoEConfig: MoE}


def mixer_class(cfg: LayerConfig) -> type[Mixer]:
    """The mixer module of a layer config; TypeError for anything that is not one."""
    try:
        return _MIXERS[type(cfg)]
    except KeyError:
        names = ", ".join(c.__name__ for c in _MIXERS)
        raise TypeError(f"unknown layer config {cfg!r}: expected one of {names}") from None


class Block(nnx.Module):
    """``h + mixer(RMSNorm(h))``."""

    def __init__(self, cfg: LayerConfig, model: ModelConfig, *, rngs: nnx.Rngs):
        self.norm = RMSNorm(model.hidden, model.norm_eps, param_dtype=model.param_dtype, rngs=rngs)
        self.mixer = mixer_class(cfg)(
            cfg,
            model.hidden,
            dtype=model.dtype,
            param_dtype=model.param_dtype,
            init_std=model.initializer_range,
            rngs=rngs,
        )

    def __call__(
        self,
        h: jax.Array,
        *,
        positions: jax.Array,
        seq_idx: jax.Array | None = None,
        cache: KVCache | MambaCache | None = None,
        pos: jax.Array | None = None,
        offset: jax.Array | None = None,
        valid: jax.Array | None = None,
        hidden_mask: jax.Array | None = None,
        mask: dict | None = None,
        relax: Relaxation | None = None,
        tap: Tap | None = None,
    ) -> tuple[jax.Array, KVCache | DMCCache | MambaCache | None]:
        """h (b, T, d) -> (b, T, d) and the mixer's updated cache.

        ``positions``, ``seq_idx`` (b, T) int; ``cache`` / ``pos`` / ``offset`` / ``valid``:
        decoding state (see :meth:`HybridLM.step`); each mixer is given only the arguments
        it takes. ``mask``: this block's activation masks, ``{"keep": 0/1 scalar, "mixer":
        mixer mask}`` (see ``jaxprune.pruning.masks``). ``tap`` sees :class:`BlockInput`
        (the normed input), the mixer's records and :class:`BlockIO`.
        """
        x = self.norm(h, hidden_mask)
        if tap is not None:
            tap(BlockInput(x))
        y, cache = _mix(
            self.mixer,
            x,
            positions=positions,
            seq_idx=seq_idx,
            cache=cache,
            pos=pos,
            offset=offset,
            valid=valid,
            mask=None if mask is None else mask.get("mixer"),
            relax=relax,
            tap=tap,
        )
        y = y.astype(h.dtype)
        if mask is not None and "keep" in mask:
            y = y * mask["keep"].astype(y.dtype)
        out = h + y
        if tap is not None:
            tap(BlockIO(h, out))
        return out, cache


def _mix(
    m: Mixer,
    x: jax.Array,
    *,
    positions: jax.Array,
    seq_idx: jax.Array | None,
    cache: KVCache | MambaCache | None,
    pos: jax.Array | None,
    offset: jax.Array | None,
    valid: jax.Array | None,
    mask: jax.Array | None,
    relax: Relaxation | None,
    tap: Tap | None,
) -> tuple[jax.Array, KVCache | DMCCache | MambaCache | None]:
    """Call mixer ``m`` on x (b, T, d) with just the keyword arguments it takes."""
    if mask is not None and not isinstance(m, Mamba2 | MoE):
        raise TypeError(f"{type(m).__name__} takes no activation mask")
    if isinstance(m, Attention):
        return m(
            x,
            positions=positions,
            seq_idx=seq_idx,
            cache=cache,
            pos=pos,
            offset=offset,
            relax=relax,
            tap=tap,
        )
    if isinstance(m, Mamba2):
        return m(x, cache=cache, seq_idx=seq_idx, mask=mask, valid=valid, tap=tap)
    if isinstance(m, MoE):
        return m(x, mask=mask, tap=tap)
    return m(x, tap=tap)


class HybridLM(nnx.Module):
    """A causal LM over any sequence of Mamba2 / attention / MLP / MoE blocks.

    ``model(tokens)`` gives logits for training and scoring; ``model.step(tokens, cache)``
    runs prefill or decoding against a :class:`Cache` from ``model.init_cache``;
    ``model.hidden_states(tokens)`` stops before the final norm (distillation).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.dtype = jnp.dtype(cfg.dtype)
        init = normal(cfg.initializer_range)
        self.embed = param(
            rngs, (cfg.vocab_size, cfg.hidden), ("vocab", "embed"), init, cfg.param_dtype
        )
        self.blocks = nnx.List([Block(layer, cfg, rngs=rngs) for layer in cfg.layers])
        self.final_norm = RMSNorm(cfg.hidden, cfg.norm_eps, param_dtype=cfg.param_dtype, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = param(
                rngs, (cfg.hidden, cfg.vocab_size), ("embed", "vocab"), init, cfg.param_dtype
            )

    def __call__(
        self,
        tokens: jax.Array,
        *,
        positions: jax.Array | None = None,
        seq_idx: jax.Array | None = None,
        masks: dict | None = None,
        tap: Tap | None = None,
    ) -> jax.Array:
        """tokens (b, T) int -> logits (b, T, V) fp32.

        ``seq_idx`` (b, T) int marks packed documents: no attention, conv tap or SSM state
        crosses a change of id. ``positions`` (b, T) defaults to 0..T-1 (RoPE only).
        ``masks``: activation masks of a masked (pruned-in-place) model, ``{"hidden": (d,),
        "blocks": (per-block mask dict, ...)}`` from ``jaxprune.pruning.masks``.
        ``tap(record)`` is called at trace time with the records of ``jaxprune.nn.taps``
        (used by calibration).
        """
        h, _ = self.hidden_states(
            tokens, positions=positions, seq_idx=seq_idx, masks=masks, tap=tap
        )
        return self.logits(h, (masks or {}).get("hidden"), tap)

    def hidden_states(
        self,
        tokens: jax.Array,
        *,
        positions: jax.Array | None = None,
        seq_idx: jax.Array | None = None,
        masks: dict | None = None,
        tap: Tap | None = None,
        outputs: Collection[int] = (),
        remat: bool = False,
        relax: Relaxation | None = None,
    ) -> tuple[jax.Array, dict[int, jax.Array]]:
        """Embeddings and blocks (arguments as :meth:`__call__`): -> the last block's output
        (b, T, d), before the final norm, and {i: output of block i (b, T, d)} for the
        (non-negative) block indices in ``outputs``. ``remat``: every block under
        ``jax.checkpoint``, so a backward pass keeps only the blocks' inputs and recomputes
        the rest (not with ``tap``). ``relax``: DMC blocks take relaxed (training)
        decisions (``jaxprune.nn.dmc``); the default is hard ones."""
        if positions is None:
            positions = _arange_positions(tokens, 0)
        h, _, kept = self._blocks(
            self.embed_tokens(tokens),
            positions=positions,
            seq_idx=seq_idx,
            masks=masks,
            tap=tap,
            outputs=outputs,
            remat=remat and tap is None,
            relax=relax,
        )
        return h, kept

    def step(self, tokens: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
        """Process ``tokens`` (b, T) after the ``cache.pos`` tokens already cached.

        Prefill is ``step(prompt, model.init_cache(...))``; decoding is T = 1.
        Returns logits (b, T, V) fp32 and the updated cache. With ``cache.offset`` (left
        padding, see ``init_cache``) the first ``offset[i]`` tokens of row i are padding:
        attention never sees them, Mamba2 zeroes them, and RoPE counts real tokens only, so
        each row gives what it would alone; logits at padded slots are meaningless.
        """
        positions = _arange_positions(tokens, cache.pos)
        valid = None
        if cache.offset is not None:
            positions = positions - cache.offset[:, None]
            valid = positions >= 0
        h, layers, _ = self._blocks(
            self.embed_tokens(tokens),
            positions=positions,
            caches=cache.layers,
            pos=cache.pos,
            offset=cache.offset,
            valid=valid,
        )
        return self.logits(h), Cache(layers, cache.pos + tokens.shape[1], cache.offset)

    def _blocks(
        self,
        h: jax.Array,
        *,
        positions: jax.Array,
        seq_idx: jax.Array | None = None,
        caches: tuple | None = None,
        pos: jax.Array | None = None,
        offset: jax.Array | None = None,
        valid: jax.Array | None = None,
        masks: dict | None = None,
        tap: Tap | None = None,
        outputs: Collection[int] = (),
        remat: bool = False,
        relax: Relaxation | None = None,
    ) -> tuple[jax.Array, tuple, dict[int, jax.Array]]:
        """The block loop: h (b, T, d) -> (output, updated caches, {i: block i's output}).
        ``remat`` (training only: no caches, no tap): each block under ``nnx.remat``."""
        masks = masks or {}
        hidden_mask, block_masks = masks.get("hidden"), masks.get("blocks")
        if remat and (caches is not None or tap is not None):
            raise ValueError("remat is for training forwards (no cache, no tap)")
        caches = (None,) * len(self.blocks) if caches is None else caches
        new, kept = [], {}
        for i, (block, c) in enumerate(zip(self.blocks, caches, strict=True)):
            mask = None if block_masks is None else block_masks[i]
            r = None if relax is None else relax.at(i)
            if remat:
                h, c = nnx.remat(_train_block)(block, h, positions, seq_idx, hidden_mask, mask, r)
            else:
                h, c = block(
                    h,
                    positions=positions,
                    seq_idx=seq_idx,
                    cache=c,
                    pos=pos,
                    offset=offset,
                    valid=valid,
                    hidden_mask=hidden_mask,
                    mask=mask,
                    relax=r,
                    tap=at_block(tap, i),
                )
            new.append(c)
            if i in outputs:
                kept[i] = h
        return h, tuple(new), kept

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        """(b, T) int -> (b, T, d) in the compute dtype."""
        return jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)

    def logits(
        self, h: jax.Array, hidden_mask: jax.Array | None = None, tap: Tap | None = None
    ) -> jax.Array:
        """Final norm and LM head: (b, T, d) -> (b, T, V) fp32."""
        h = self.final_norm(h, hidden_mask)
        if tap is not None:
            tap(FinalHidden(h))
        w = self.embed[...].T if self.config.tie_embeddings else self.lm_head[...]
        return jnp.einsum(
            "btd,dv->btv", h, w.astype(self.dtype), preferred_element_type=jnp.float32
        )

    def init_cache(
        self, batch: int, max_len: int, dtype=None, *, offset: jax.Array | None = None
    ) -> Cache:
        """Empty caches for ``batch`` sequences of up to ``max_len`` tokens. The KV and conv
        caches use ``dtype`` (default: the compute dtype); SSM states are always fp32.
        ``offset`` (batch,) int: left-padding tokens per row of the prompt to come."""
        dtype = jnp.dtype(dtype or self.dtype)
        layers = []
        for block in self.blocks:
            mixer = block.mixer
            if isinstance(mixer, Attention):
                layers.append(mixer.init_cache(batch, max_len, dtype))
            elif isinstance(mixer, Mamba2):
                layers.append(mixer.init_cache(batch, dtype))
            else:
                layers.append(None)
        if offset is not None:
            offset = jnp.broadcast_to(jnp.asarray(offset, jnp.int32), (batch,))
        return Cache(tuple(layers), jnp.zeros((), jnp.int32), offset)


def _train_block(block: Block, h, positions, seq_idx, hidden_mask, mask, relax):
    """A block's training forward as a function of its arguments (for ``nnx.remat``)."""
    return block(
        h, positions=positions, seq_idx=seq_idx, hidden_mask=hidden_mask, mask=mask, relax=relax
    )


def _arange_positions(tokens: jax.Array, start) -> jax.Array:
    b, t = tokens.shape
    return jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))


def abstract_model(cfg: ModelConfig) -> HybridLM:
    """The model of ``cfg`` with ``jax.ShapeDtypeStruct`` values (``nnx.eval_shape``): its
    structure, parameter shapes, dtypes and axes, with nothing allocated."""
    return nnx.eval_shape(lambda: HybridLM(cfg, rngs=nnx.Rngs(0)))


def init_model(cfg: ModelConfig, seed: int = 0, *, mesh=None, rules=None) -> HybridLM:
    """Build a model with one jitted init. With ``mesh`` every parameter is created already
    sharded by the logical-axis ``rules`` (default: ``jaxprune.sharding.RULES``)."""
    from jaxprune import sharding

    def make(key: jax.Array) -> nnx.State:
        return nnx.state(HybridLM(cfg, rngs=nnx.Rngs(params=key)))

    abstract = abstract_model(cfg)
    out_shardings = None
    if mesh is not None:
        shardings = sharding.state_shardings(nnx.state(abstract), mesh, rules or sharding.RULES)
        out_shardings = jax.tree.map(
            lambda v: v.get_value(), shardings, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )
    state = jax.jit(make, out_shardings=out_shardings)(jax.random.key(seed))
    return nnx.merge(nnx.graphdef(abstract), state)
