"""Helpers for training and measuring small language models on local corpora, shared by
``jaxprune demo`` and the ablation study (:mod:`jaxprune.study`): the standard library
split, a byte-level BPE tokenizer trained on files, greedy decode tokens/s and a one-call
training run (plain LM or distillation) that returns the trained model."""

from __future__ import annotations

import math
import sysconfig
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.converters.native import load_native
from jaxprune.inference import make_generate
from jaxprune.train import LossConfig, OptimConfig, TrainConfig, run


def stdlib_split(max_mb: float) -> tuple[list[Path], list[Path]]:
    """(train, held-out) .py files of the standard library; ~1 in 20 modules held out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not {"test", "tests", "site-packages", "idle_test"} & set(p.parts)
    )
    train, held, size = [], [], 0
    for p in files:
        rel = str(p.relative_to(root)).encode()
        if zlib.crc32(rel) % 20 == 0:
            held.append(p)
        elif size < max_mb * 1e6:
            train.append(p)
            size += p.stat().st_size
    if not train or not held:
        raise ValueError(f"no Python standard library sources found under {root}")
    return train, held


def train_tokenizer(files: list[Path], vocab_size: int, out: Path):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``files``; saved as
    ``out/tokenizer.json`` (EOS ``<|endoftext|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(f) for f in files], trainer)
    tok.save(str(out / "tokenizer.json"))
    return tok


DECODE_REPS = 5


def decode_tps(model, prompt_len: int = 32, new: int = 64, reps: int = DECODE_REPS) -> float:
    """Greedy decode tokens/s at batch 1: the fastest of ``reps`` timed generations
    (compilation excluded; the minimum is the least disturbed by other load)."""
    gen = make_generate(model, new)
    state = nnx.state(model)
    prompt = jnp.zeros((1, prompt_len), jnp.int32)
    jax.block_until_ready(gen(state, prompt, jax.random.key(0)))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(gen(state, prompt, jax.random.key(0)))
        best = min(best, time.perf_counter() - t0)
    return new / best


def small_optim(lr: float) -> OptimConfig:
    """The optimizer of :func:`small_train_config`: the library's defaults (warm-up 5% of
    the run, at most 100 steps; cosine) at peak ``lr``. Cache keys of small runs hold it."""
    return OptimConfig(lr=lr)


def small_train_config(
    steps: int, *, batch_size: int, seq_len: int, lr: float, seed: int, distill: bool
) -> TrainConfig:
    """The fp32, data-parallel run config of a small model: forward KL when ``distill``,
    else cross-entropy; one checkpoint at the end (and every ``steps // 4`` steps)."""
    loss = LossConfig(kl="forward") if distill else LossConfig(kl="none", ce_weight=1.0)
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        seed=seed,
        compute_dtype="float32",
        teacher_dtype="float32",
        loss=loss,
        optim=small_optim(lr),
        save_every=max(1, steps // 4),
        keep=1,
        async_save=False,
        log_every=max(1, steps // 10),
        progress=True,
        mesh=(math.gcd(batch_size, jax.device_count()), 1, 1),
    )


def train_small(tc: TrainConfig, model, corpus, out: Path, teacher=None, resume=False):
    """Run ``tc`` (from :func:`small_train_config`) into ``out``; returns the trained model
    loaded back from ``out``. ``resume``: continue from ``out``'s last checkpoint. A run
    stopped by SIGTERM (checkpoint saved, nothing exported) raises RuntimeError."""
    res = run(tc, student=model, train_source=corpus, out=out, teacher=teacher, resume=resume)
    if res.status != "done":
        raise RuntimeError(f"training {res.status} at step {res.step}; rerun to resume")
    return load_native(out)[0]
