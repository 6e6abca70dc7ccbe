"""Run logging: a tqdm progress bar (tokens/s, ETA), JSONL metrics, optional TensorBoard.

TensorBoard event files are written when ``tensorboardX`` (or ``torch.utils.tensorboard``
with the ``tensorboard`` package) is importable; otherwise they are silently skipped. Only
process 0 logs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


def _summary_writer(logdir: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
    try:
        return SummaryWriter(str(logdir))
    except Exception:  # a broken optional install must not stop training
        return None


def _clean(v: Any) -> Any:
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN / inf
    return v


class RunLogger:
    """``log(step, metrics, kind)`` appends ``{"step", "kind", **metrics}`` to
    ``out/metrics.jsonl`` (kind ``train`` or ``eval``) and to TensorBoard under
    ``out/tensorboard``; ``advance`` moves the progress bar."""

    def __init__(
        self,
        out: Path,
        *,
        total_steps: int,
        start_step: int,
        tokens_per_step: int,
        enabled: bool = True,
        progress: bool = True,
    ):
        self.enabled = enabled
        self.tokens_per_step = tokens_per_step
        self.file = open(Path(out) / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115
        self.tb = _summary_writer(Path(out) / "tensorboard") if enabled else None
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not (enabled and progress),
        )
        self._t0 = time.perf_counter()
        self._steps = 0

    @property
    def tokens_per_second(self) -> float:
        dt = time.perf_counter() - self._t0
        return self._steps * self.tokens_per_step / dt if dt > 0 else 0.0

    def advance(self, metrics: dict[str, Any]) -> None:
        self._steps += 1
        self.bar.update(1)
        self.bar.set_postfix(
            loss=f"{float(metrics['loss']):.4f}",
            tok_s=f"{self.tokens_per_second:,.0f}",
            refresh=False,
        )

    def reset_rate(self) -> None:
        """Restart the tokens/s clock (e.g. after compilation or an evaluation)."""
        self._t0, self._steps = time.perf_counter(), 0

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        row = {"step": step, "kind": kind, **{k: _clean(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "kind") and isinstance(v, int | float):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)
        if kind == "eval":
            self.bar.write(
                f"step {step}: eval loss {row['loss']:.4f}, ppl {row['ppl']:.3f}"
                + (f", kl {row['kl']:.4f}" if "kl" in row else "")
            )

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
