"""Sizes of the ablation study: the full setting (the issue's minimums), ``--quick``
(minutes on 2 CPU cores) and a tiny test setting."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from jaxprune.config import AttentionConfig, Mamba2Config, MLPConfig, ModelConfig


@dataclass(frozen=True)
class StudyConfig:
    """Every size and budget of one study run (all of it is part of the cache keys)."""

    vocab_size: int = 4096
    hidden: int = 256
    pattern: str = "M-M*-M-M*-M-"
    mamba_heads: int = 8
    mamba_head_dim: int = 64
    n_groups: int = 2
    intermediate: int = 1024
    seq_len: int = 256
    batch_size: int = 16
    teacher_steps: int = 1250  # 1250 * 16 * 256 = 5.1M tokens
    distill_steps: int = 125  # 125 * 16 * 256 = 0.51M tokens
    lr: float = 2e-3
    scratch_multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    zero_shot_seeds: int = 5
    distill_seeds: int = 3
    calib_rows: int = 64
    eval_rows: int = 128
    held_fraction: float = 0.05
    decode_new: int = 64  # 0: no decode tokens/s measured
    size: str = "full"

    def teacher(self) -> ModelConfig:
        """The Nemotron-H-style hybrid teacher (Mamba2 with n_groups > 1, attention, MLP)."""
        return ModelConfig.from_pattern(
            self.pattern,
            vocab_size=self.vocab_size,
            hidden=self.hidden,
            mamba=Mamba2Config(
                num_heads=self.mamba_heads,
                head_dim=self.mamba_head_dim,
                state=32,
                n_groups=self.n_groups,
                chunk_size=64,
            ),
            attention=AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=self.hidden // 4),
            mlp=MLPConfig(intermediate=self.intermediate),
            name=f"study-teacher-{self.size}",
        )

    def seeds(self, distill: bool) -> list[int]:
        return list(range(self.distill_seeds if distill else self.zero_shot_seeds))

    def with_seeds(self, n: int | None) -> StudyConfig:
        """``--seeds N``: N zero-shot seeds and min(N, distill seeds) distillation seeds."""
        if n is None:
            return self
        return dataclasses.replace(
            self, zero_shot_seeds=n, distill_seeds=min(n, self.distill_seeds)
        )


FULL = StudyConfig()

QUICK = StudyConfig(
    vocab_size=1024,
    hidden=128,
    pattern="M-M*-M-",
    mamba_heads=8,
    mamba_head_dim=32,
    intermediate=512,
    seq_len=128,
    batch_size=8,
    teacher_steps=300,
    distill_steps=40,
    scratch_multiples=(1, 2, 4),
    zero_shot_seeds=3,
    distill_seeds=2,
    calib_rows=16,
    eval_rows=32,
    decode_new=32,
    size="quick",
)

TINY = StudyConfig(
    vocab_size=320,  # > the byte-level alphabet (256) + EOS
    hidden=32,
    pattern="M-*-",
    mamba_heads=8,
    mamba_head_dim=8,
    intermediate=64,
    seq_len=32,
    batch_size=4,
    teacher_steps=4,
    distill_steps=2,
    scratch_multiples=(1, 2),
    zero_shot_seeds=2,
    distill_seeds=1,
    calib_rows=4,
    eval_rows=4,
    decode_new=0,  # no decode timing (its compile alone takes ~30 s)
    size="tiny",
)

SIZES = {"full": FULL, "quick": QUICK, "tiny": TINY}
