"""Step-by-step decoding on the host: tokens come out one step at a time (for streaming,
stop strings and early exit), from a jitted prefill and a jitted per-step function that are
compiled once per shape and reused across calls."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.errors import UserError
from jaxprune.inference.generate import decode_step, make_picker, prefill
from jaxprune.nn.cache import Cache
from jaxprune.nn.model import HybridLM


class Decoder:
    """Jitted ``prefill(state, prompt, cache, key)`` and ``step(state, tok, cache, key)``,
    each returning (next token (b,) int32, cache). The cache is donated to ``step``;
    ``last_cache`` is the newest one :meth:`stream` produced (e.g. to read a DMC cache's
    compression, :func:`jaxprune.dmc.measure.cache_compression`)."""

    def __init__(
        self,
        model: HybridLM,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        cache_dtype=None,
    ):
        graphdef = nnx.graphdef(model)
        pick = make_picker(temperature, top_k, top_p)
        self.model = model
        self.cache_dtype = cache_dtype
        self.last_cache: Cache | None = None
        self.prefill = jax.jit(
            lambda s, p, c, k: prefill(nnx.merge(graphdef, s), p, c, k, pick),
            donate_argnums=2,
        )
        self.step = jax.jit(
            lambda s, t, c, k: decode_step(nnx.merge(graphdef, s), t, c, k, pick),
            donate_argnums=2,
        )

    def init_cache(self, batch: int, max_len: int, offset: np.ndarray | None = None) -> Cache:
        """An empty cache; ``offset`` (batch,) is the left padding of each prompt row."""
        off = None if offset is None else jnp.asarray(offset, jnp.int32)
        return self.model.init_cache(batch, max_len, self.cache_dtype, offset=off)

    def stream(
        self,
        prompt: np.ndarray,
        max_new_tokens: int,
        *,
        offset: np.ndarray | None = None,
        key: jax.Array | None = None,
        max_len: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield the new tokens (b,) int32 of each step, ``max_new_tokens`` times at most
        (stop iterating to stop early). prompt (b, T0) int, left-padded by ``offset``.

        ``max_len`` (>= T0 + max_new_tokens; default equal) sizes the KV cache: pass a
        bucketed value so that different prompt lengths reuse the compiled step.
        """
        if max_new_tokens < 1:
            raise UserError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
        prompt = jnp.asarray(prompt, jnp.int32)
        b, t0 = prompt.shape
        max_len = t0 + max_new_tokens if max_len is None else max_len
        if max_len < t0 + max_new_tokens:
            raise UserError(f"generate: max_len {max_len} < {t0} + {max_new_tokens}")
        key = jax.random.key(0) if key is None else key
        state = nnx.state(self.model)
        cache = self.init_cache(b, max_len, offset)
        tok, cache = self.prefill(state, prompt, cache, jax.random.fold_in(key, 0))
        cache = cache.fit_dmc(max_new_tokens - 1)  # DMC: only the slots it can still use
        self.last_cache = cache
        yield np.asarray(tok)
        for i in range(1, max_new_tokens):
            tok, cache = self.step(state, tok, cache, jax.random.fold_in(key, i))
            self.last_cache = cache
            yield np.asarray(tok)


def generate_text(
    decoder: Decoder,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    *,
    key: jax.Array | None = None,
    eos_id: int | None = None,
    stop: Sequence[str] = (),
    multiple: int = 64,
    max_prompt_len: int | None = None,
    on_step=None,
) -> list[str]:
    """Continue each prompt (batched, left-padded to a multiple of ``multiple`` tokens) until
    ``max_new_tokens`` or, for every row, ``eos_id`` or one of the ``stop`` strings (the
    text is cut before it). Prompts keep their last ``max_prompt_len`` tokens when given.
    ``on_step(i, texts)`` (if given) sees the decoded continuations after step i, for
    streaming. ``tokenizer``: a :class:`jaxprune.tokenizer.Tokenizer` or a bare
    ``tokenizers.Tokenizer``; prompts are encoded with its special tokens (e.g. a BOS).
    Returns the continuations."""
    from jaxprune.inference.text import left_pad, round_up
    from jaxprune.tokenizer import as_tokenizer

    tokenizer = as_tokenizer(tokenizer)
    ids = [tokenizer.encode(p, add_special_tokens=True)[-(max_prompt_len or 0) :] for p in prompts]
    tokens, offset = left_pad(ids, eos_id or 0, multiple=multiple)
    max_len = round_up(tokens.shape[1] + max_new_tokens, multiple)
    out: list[list[int]] = [[] for _ in prompts]
    done = np.zeros(len(prompts), bool)
    texts = [""] * len(prompts)
    gen = decoder.stream(tokens, max_new_tokens, offset=offset, key=key, max_len=max_len)
    for i, tok in enumerate(gen):
        for r, t in enumerate(tok.tolist()):
            if done[r]:
                continue
            if eos_id is not None and t == eos_id:
                done[r] = True
            else:
                out[r].append(t)
        full = [tokenizer.decode(o) for o in out]
        texts = [_cut(t, stop) for t in full]
        done |= np.array([len(a) < len(b) for a, b in zip(texts, full)])
        if on_step is not None:
            on_step(i, texts)
        if done.all():
            break
    return texts


def generate_ids(
    decoder: Decoder,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    key: jax.Array | None = None,
    eos_id: int | None = None,
    multiple: int = 64,
) -> list[list[int]]:
    """Continue each prompt of token ids (batched, left-padded) until ``max_new_tokens`` or,
    for every row, ``eos_id``; returns the new ids of each row (EOS not included). Ids
    outside the model's vocabulary are refused."""
    from jaxprune.inference.text import left_pad, round_up

    vocab = decoder.model.config.vocab_size
    for ids in prompts:
        if not ids:
            raise UserError("generate: a prompt of token ids needs at least one id")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise UserError(
                f"generate: token ids {bad[:5]} are outside the vocabulary [0, {vocab})"
            )
    tokens, offset = left_pad(prompts, eos_id or 0, multiple=multiple)
    max_len = round_up(tokens.shape[1] + max_new_tokens, multiple)
    out: list[list[int]] = [[] for _ in prompts]
    done = np.zeros(len(prompts), bool)
    for tok in decoder.stream(tokens, max_new_tokens, offset=offset, key=key, max_len=max_len):
        for r, t in enumerate(tok.tolist()):
            if done[r]:
                continue
            if eos_id is not None and t == eos_id:
                done[r] = True
            else:
                out[r].append(t)
        if done.all():
            break
    return out


def _cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any of the ``stop`` strings."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text
