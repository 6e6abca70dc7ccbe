"""Max |logit difference| between jaxprune and transformers for every supported family.

    python experiments/hf_parity.py [--seq-len 64] [--batch 2]

Builds the tiny random models of ``jaxprune.testing.hf_models`` (every parameter random,
fp32), saves them with ``save_pretrained``, loads them with ``jaxprune.converters.load_hf``
and compares logits on random tokens. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.converters import load_hf
from jaxprune.testing.hf_models import FAMILIES, logits, random_model, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    tokens = np.random.default_rng(0).integers(0, 61, size=(args.batch, args.seq_len))
    print("| family | max abs logit diff | max abs logit |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            hf = random_model(family)
            model, _ = load_hf(save(hf, Path(tmp) / family))
            ours = np.asarray(jax.jit(lambda m, t: m(t))(model, jnp.asarray(tokens)))
            ref = logits(hf, tokens)
            print(f"| {family} | {np.abs(ours - ref).max():.2e} | {np.abs(ref).max():.2f} |")


if __name__ == "__main__":
    main()
