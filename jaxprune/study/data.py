"""The study's data: one token stream cut into a training part and a held-out tail that is
never trained or calibrated on.

Text (``.txt``, ``.txt.gz``, ``.jsonl``) is split by lines before tokenizing (the last
``held_fraction`` of the lines are held out, and a tokenizer trained here sees only the
training lines); token ids (``.npy`` / ``.bin``) are split by position. With no ``--data``
the default is the KJV text (``../shared/data/kjv.txt.gz`` next to the repository) when
present, else the Python standard library sources the demo uses (held-out modules).
Calibration rows are windows of the training part, drawn by seed.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxprune.atomic import atomic_write_text
from jaxprune.data import Corpus, load_corpus
from jaxprune.data.text import jsonl_texts
from jaxprune.errors import UserError
from jaxprune.small_lm import stdlib_split, train_tokenizer
from jaxprune.study.cache import array_digest, digest

REPO = Path(__file__).resolve().parents[2]
KJV = REPO.parent / "shared" / "data" / "kjv.txt.gz"


def default_data() -> Path | None:
    """The KJV text next to the repository, or None (then: the standard library)."""
    return KJV if KJV.is_file() else None


@dataclass(frozen=True)
class Split:
    """``tokens`` (N,) int32; ``[0, n_train)`` is trained and calibrated on, the rest held out."""

    tokens: np.ndarray
    n_train: int
    source: str

    def train_corpus(self) -> Corpus:
        return Corpus([self.tokens[: self.n_train]], np.zeros(1, np.int64))

    def held_rows(self, seq_len: int, n: int) -> np.ndarray:
        held = self.tokens[self.n_train :]
        k = min(n, len(held) // seq_len)
        if k < 1:
            raise UserError(f"data: the held-out part ({len(held)} tokens) is shorter than a row")
        return held[: k * seq_len].reshape(k, seq_len)

    def calib_starts(self, seq_len: int, n: int, seed: int) -> np.ndarray:
        """Start offsets of ``n`` distinct training windows drawn by ``seed``."""
        slots = self.n_train // seq_len
        if slots < n:
            raise UserError(f"data: {self.n_train} training tokens hold fewer than {n} rows")
        pick = np.random.default_rng([7, seed]).choice(slots, n, replace=False)
        return np.sort(pick) * seq_len

    def calib_rows(self, seq_len: int, n: int, seed: int) -> np.ndarray:
        starts = self.calib_starts(seq_len, n, seed)
        check_disjoint(self.n_train, len(self.tokens), starts, seq_len)
        return np.stack([self.tokens[s : s + seq_len] for s in starts])


def check_disjoint(n_train: int, n_total: int, calib_starts: np.ndarray, seq_len: int) -> None:
    """AssertionError unless the held-out part is non-empty and every calibration window
    lies inside the training part."""
    assert 0 < n_train < n_total, "held-out part empty or overlapping"
    assert np.all(calib_starts >= 0) and np.all(calib_starts + seq_len <= n_train), (
        "a calibration window reaches into the held-out part"
    )


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.readlines()


def _text_files(path: Path | None, work: Path, held_fraction: float):
    """(train files, held files, text suffixes) of a text source split by lines."""
    if path is None:
        train, held = stdlib_split(4.0)
        return train, held, (".py",)
    lines = _lines(path)
    cut = int(len(lines) * (1 - held_fraction))
    if cut < 1 or cut >= len(lines):
        raise UserError(f"data: {path} has too few lines ({len(lines)}) to hold some out")
    ext = ".jsonl" if path.name.endswith((".jsonl", ".jsonl.gz")) else ".txt"
    out = []
    for name, part in (("train", lines[:cut]), ("held", lines[cut:])):
        p = work / f"{name}{ext}"
        p.write_text("".join(part), encoding="utf-8")
        out.append([p])
    return out[0], out[1], (".txt",)


def _plain(files: list[Path], d: Path) -> list[Path]:
    """Text files for tokenizer training: ``.jsonl`` files as their ``text`` fields."""
    if not any(f.suffix == ".jsonl" for f in files):
        return files
    out = d / "tokenizer_train.txt"
    out.write_text("\n".join(t for f in files for t in jsonl_texts(f)), encoding="utf-8")
    return [out]


def _key(path: Path | None, tokenizer: str | None, vocab: int, held_fraction: float) -> str:
    stat = None if path is None else [str(path.resolve()), os.path.getsize(path)]
    return digest({"data": stat, "tok": tokenizer, "vocab": vocab, "held": held_fraction})


def prepare(
    path: Path | None,
    work: Path,
    *,
    vocab_size: int,
    tokenizer=None,
    tokenizer_id: str | None = None,
    held_fraction: float = 0.05,
) -> tuple[Split, Path | None]:
    """The split of ``path`` (None: the stdlib) and the directory of a tokenizer trained on
    its training part (None when ``tokenizer`` was given or the data are token ids).
    Cached under ``work/<key>``; a cache that kept only ``split.json`` and the tokenizer
    (the tokens are not committed) re-tokenizes with that tokenizer and checks the digest."""
    d = work / _key(path, tokenizer_id, vocab_size, held_fraction)
    meta = d / "split.json"
    info = json.loads(meta.read_text()) if meta.is_file() else None
    kept_tok = (d / "tokenizer.json").is_file()
    if info is not None and (d / "tokens.npy").is_file():
        tokens = np.load(d / "tokens.npy")
        if "digest" not in info:  # a cache written before the digest was recorded
            atomic_write_text(meta, json.dumps({**info, "digest": array_digest([tokens])}))
        return Split(tokens, info["n_train"], info["source"]), (d if kept_tok else None)
    d.mkdir(parents=True, exist_ok=True)
    source = str(path) if path is not None else "python-stdlib"
    tok_dir = None
    if path is not None and path.suffix in (".npy", ".bin"):
        c = load_corpus(path, vocab_size=vocab_size)
        tokens = c.tokens(0, c.num_tokens)
        n_train = int(len(tokens) * (1 - held_fraction))
    else:
        train, held, suffixes = _text_files(path, d, held_fraction)
        if tokenizer is None:
            if info is not None and kept_tok:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
            else:
                tokenizer = train_tokenizer(_plain(train, d), vocab_size, d)
            tok_dir = d
        kw = dict(tokenizer=tokenizer, vocab_size=vocab_size, text_suffixes=suffixes)
        a = load_corpus(train, **kw)
        b = load_corpus(held, **kw)
        tokens = np.concatenate([a.tokens(0, a.num_tokens), b.tokens(0, b.num_tokens)])
        n_train = a.num_tokens
    tokens = np.asarray(tokens, np.int32)
    sha = array_digest([tokens])
    if info is not None and info.get("digest", sha) != sha:
        raise RuntimeError(
            f"{d}: the data re-tokenized to digest {sha}, the cached split had "
            f"{info['digest']}: the results cached with it describe other tokens"
        )
    np.save(d / "tokens.npy", tokens)
    atomic_write_text(meta, json.dumps({"n_train": int(n_train), "source": source, "digest": sha}))
    return Split(tokens, int(n_train), source), tok_dir
