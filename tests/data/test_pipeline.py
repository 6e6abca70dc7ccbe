"""Training data: sources, packing, grain shuffling / sharding / resumable iterator state."""

from __future__ import annotations

import json

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from tokenizers import Tokenizer, models, pre_tokenizers

from jaxprune.data import (
    ROW_KEYS,
    Corpus,
    PackedRows,
    load_corpus,
    make_eval_batches,
    make_train_iterator,
)
from jaxprune.nn.model import HybridLM
from jaxprune.testing.configs import hybrid_config

WORDS = ["[UNK]", "<|endoftext|>", "the", "cat", "sat", "on", "mat", "def", "f", "(", ")", ":"]
EOS = 1


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def ids(text: str) -> list[int]:
    return [WORDS.index(w) for w in text.split()]


def rows_of(corpus: Corpus, seq_len: int) -> list[dict]:
    packed = PackedRows(corpus, seq_len)
    return [packed[i] for i in range(len(packed))]


def counting_corpus(n: int = 61) -> Corpus:
    """Tokens 0..n-1, one document: row i starts with token i * T."""
    return Corpus([np.arange(n)], np.array([0]))


# --- packing ---------------------------------------------------------------------------------


def test_packing_hand_made_documents_spanning_rows():
    # Documents [10 11 12] [20 21 22 23 24 25] [30 31]: 11 tokens, T=4 -> ceil(10/4) = 3 rows.
    docs = [[10, 11, 12], [20, 21, 22, 23, 24, 25], [30, 31]]
    corpus = Corpus([np.concatenate(docs)], np.array([0, 3, 9]))
    rows = rows_of(corpus, 4)
    expected = [
        dict(
            tokens=[10, 11, 12, 20],
            targets=[11, 12, 20, 21],
            loss_mask=[1, 1, 0, 1],
            seq_idx=[0, 0, 0, 1],
            positions=[0, 1, 2, 0],
        ),
        dict(  # document 2 continues: a new segment, positions from 0
            tokens=[21, 22, 23, 24],
            targets=[22, 23, 24, 25],
            loss_mask=[1, 1, 1, 1],
            seq_idx=[0, 0, 0, 0],
            positions=[0, 1, 2, 3],
        ),
        dict(  # last row: padding is its own segment with no loss
            tokens=[25, 30, 31, 0],
            targets=[30, 31, 0, 0],
            loss_mask=[0, 1, 0, 0],
            seq_idx=[0, 1, 1, 2],
            positions=[0, 0, 1, 0],
        ),
    ]
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert set(row) == set(ROW_KEYS)
        for key, value in want.items():
            dtype = np.float32 if key == "loss_mask" else np.int32
            assert row[key].dtype == dtype, key
            np.testing.assert_array_equal(row[key], np.array(value, dtype), err_msg=key)


def test_packing_every_token_predicted_once_across_files():
    parts = [np.arange(0, 7), np.arange(7, 20)]  # a file boundary inside a row
    corpus = Corpus(parts, np.array([0, 7]))
    rows = rows_of(corpus, 5)
    targets = np.concatenate([r["targets"][r["loss_mask"] > 0] for r in rows])
    # Every token but the first of each document is a target exactly once.
    np.testing.assert_array_equal(targets, [t for t in range(20) if t not in (0, 7)])
    for r in rows:
        assert np.all(np.diff(r["seq_idx"]) >= 0) and r["seq_idx"][0] == 0


# --- sources ---------------------------------------------------------------------------------


def test_text_sources_directory_glob_and_jsonl(tmp_path, tokenizer):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("the cat sat\n\non the mat\n")
    (tmp_path / "docs" / "b.txt").write_text("the cat")
    (tmp_path / "docs" / "empty.txt").write_text("")
    (tmp_path / "docs" / ".hidden.txt").write_text("mat mat")
    corpus = load_corpus(tmp_path / "docs", tokenizer=tokenizer)  # one document per file
    stream = np.concatenate(corpus.parts)
    np.testing.assert_array_equal(
        stream, ids("the cat sat on the mat") + [EOS] + ids("the cat") + [EOS]
    )
    np.testing.assert_array_equal(corpus.doc_starts, [0, 7])

    same = load_corpus(str(tmp_path / "docs" / "*.txt"), tokenizer=tokenizer)
    np.testing.assert_array_equal(np.concatenate(same.parts), stream)

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("def f ( ) :\n\n\n    the\n")
    code = load_corpus(tmp_path / "src", tokenizer=tokenizer, text_suffixes=(".py",))
    np.testing.assert_array_equal(np.concatenate(code.parts), ids("def f ( ) : the") + [EOS])

    path = tmp_path / "d.jsonl"
    lines = [{"text": "the cat"}, {"text": ""}, {"text": "sat on mat", "id": 3}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    corpus = load_corpus(path, tokenizer=tokenizer, vocab_size=len(WORDS))
    np.testing.assert_array_equal(
        corpus.parts[0], ids("the cat") + [EOS] + ids("sat on mat") + [EOS]
    )
    np.testing.assert_array_equal(corpus.doc_starts, [0, 3])


def test_token_file_sources_npy_and_bin(tmp_path):
    stream = np.array([5, 6, 1, 7, 1, 1, 8, 9], np.int64)
    np.save(tmp_path / "s.npy", stream)
    corpus = load_corpus(tmp_path / "s.npy", eos_id=1, vocab_size=10)
    np.testing.assert_array_equal(corpus.doc_starts, [0, 3, 5, 6])  # documents end at EOS
    np.testing.assert_array_equal(corpus.tokens(0, 99), stream)
    assert load_corpus(tmp_path / "s.npy").num_docs == 1  # no EOS id: one document

    np.save(tmp_path / "m.npy", np.arange(12, dtype=np.int32).reshape(3, 4))
    corpus = load_corpus(tmp_path / "m.npy")
    np.testing.assert_array_equal(corpus.doc_starts, [0, 4, 8])  # one document per row
    rows = rows_of(corpus, 4)
    np.testing.assert_array_equal(rows[1]["tokens"], [4, 5, 6, 7])
    np.testing.assert_array_equal(rows[1]["loss_mask"], [1, 1, 1, 0])

    stream.astype(np.uint16).tofile(tmp_path / "s.bin")
    corpus = load_corpus([tmp_path / "s.bin", tmp_path / "s.npy"], eos_id=1)
    assert isinstance(corpus.parts[0], np.memmap) and corpus.parts[0].dtype == np.uint16
    np.testing.assert_array_equal(corpus.tokens(0, 99), np.concatenate([stream, stream]))
    np.testing.assert_array_equal(corpus.doc_starts, [0, 3, 5, 6, 8, 11, 13, 14])
    wide = load_corpus(tmp_path / "s.bin", bin_dtype="uint32")  # same bytes, other dtype
    assert wide.parts[0].dtype == np.uint32 and wide.num_tokens == 4


@pytest.mark.parametrize(
    ("make", "kw", "match"),
    [
        (lambda d: d / "missing.txt", {}, "no such file"),
        (lambda d: _write(d / "x.csv", "a"), {}, "unsupported file type '.csv'"),
        (lambda d: _write(d / "x.txt", "the cat"), {}, "needs the model's tokenizer"),
        (lambda d: _write(d / "x.jsonl", "\n"), {"tokenizer": True}, "holds no tokens"),
        (lambda d: _write(d / "x.jsonl", '{"txt": 1}\n'), {"tokenizer": True}, r"^data: .*line 1"),
        (lambda d: _npy(d / "x.npy", np.zeros(0, np.int32)), {}, "holds no tokens"),
        (lambda d: _npy(d / "x.npy", np.array([1, 70])), {"vocab_size": 61}, "70 >= vocab size 61"),
        (lambda d: _npy(d / "x.npy", np.array([1, -2])), {}, "negative token id"),
        (lambda d: _npy(d / "x.npy", np.ones(3, np.float32)), {}, "integer token ids"),
        (lambda d: _npy(d / "x.npy", np.array(["a"], object)), {}, "cannot read"),
        (lambda d: _write(d / "x.bin", "abc"), {}, "cannot read"),  # 3 bytes: not uint16
        (lambda d: _npy(d / "x.npy", np.arange(3)), {"bin_dtype": "int8"}, "bin_dtype"),
        (lambda d: d / "nothing*.npy", {}, "no file matches"),
    ],
)
def test_bad_input_raises_one_line_value_error(tmp_path, tokenizer, make, kw, match):
    if kw.get("tokenizer"):
        kw = {**kw, "tokenizer": tokenizer}
    with pytest.raises(ValueError, match=match) as info:
        load_corpus(make(tmp_path), **kw)
    assert "\n" not in str(info.value)


def test_parquet_without_pyarrow_says_so(tmp_path, tokenizer):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs pyarrow"):
            load_corpus(_write(tmp_path / "x.parquet", "PAR1"), tokenizer=tokenizer)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": ["the cat", "sat"]}), tmp_path / "x.parquet")
        corpus = load_corpus(tmp_path / "x.parquet", tokenizer=tokenizer)
        np.testing.assert_array_equal(corpus.parts[0], ids("the cat") + [EOS] + ids("sat") + [EOS])


def _write(path, text: str):
    path.write_text(text)
    return path


def _npy(path, arr: np.ndarray):
    np.save(path, arr, allow_pickle=True)
    return path


# --- grain iterator --------------------------------------------------------------------------


def _row_ids(batches, seq_len: int) -> list[int]:
    return [int(t) // seq_len for b in batches for t in b["tokens"][:, 0]]


def test_shuffle_is_deterministic_and_covers_every_row_once_per_epoch():
    corpus, t = counting_corpus(), 4  # 15 rows

    def order(seed, shuffle=True):
        it = make_train_iterator(
            corpus, seq_len=t, batch_size=1, seed=seed, shuffle=shuffle, num_epochs=2
        )
        return _row_ids(list(it), t)

    a = order(0)
    assert a == order(0) and a != order(1)
    assert sorted(a[:15]) == sorted(a[15:]) == list(range(15))  # each epoch: every row once
    assert a[:15] != a[15:]  # reshuffled each epoch
    assert order(0, shuffle=False) == list(range(15)) * 2


@pytest.mark.parametrize("n_rows", [14, 15])
def test_processes_see_disjoint_rows_covering_everything(n_rows):
    t = 4
    corpus = counting_corpus(n_rows * t + 1)
    seen = []
    for p in range(2):
        it = make_train_iterator(
            corpus, seq_len=t, batch_size=1, seed=3, num_epochs=1, process_index=p, process_count=2
        )
        seen.append(_row_ids(list(it), t))
    assert len(seen[0]) == len(seen[1]) == n_rows // 2  # equal counts: no process runs dry
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == n_rows - n_rows % 2


def test_batches_shapes_and_json_state_resume_exactly():
    corpus, t = counting_corpus(), 4
    kw = dict(seq_len=t, batch_size=3, seed=7)
    it = make_train_iterator(corpus, **kw)
    for _ in range(4):
        batch = next(it)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: ((3, t), np.float32 if k == "loss_mask" else np.int32) for k in ROW_KEYS
    }
    state = json.loads(json.dumps(it.get_state()))
    rest = [next(it) for _ in range(8)]  # crosses the epoch boundary (15 rows)
    resumed = make_train_iterator(corpus, **kw)
    resumed.set_state(state)
    for a, b in zip(rest, [next(resumed) for _ in range(8)], strict=True):
        for k in ROW_KEYS:
            np.testing.assert_array_equal(a[k], b[k])


def test_orbax_composite_checkpoint_restores_iterator(tmp_path):
    corpus, t = counting_corpus(), 4
    kw = dict(seq_len=t, batch_size=2, seed=11)
    it = make_train_iterator(corpus, **kw)
    for _ in range(3):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(
            3,
            args=ocp.args.Composite(
                meta=ocp.args.JsonSave({"step": 3}), data=grain.checkpoint.CheckpointSave(it)
            ),
        )
        mngr.wait_until_finished()
    expected = [next(it)["tokens"] for _ in range(5)]
    fresh = make_train_iterator(corpus, **kw)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        out = mngr.restore(
            mngr.latest_step(),
            args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(), data=grain.checkpoint.CheckpointRestore(fresh)
            ),
        )
    assert out.meta == {"step": 3}
    np.testing.assert_array_equal([next(fresh)["tokens"] for _ in range(5)], expected)


def test_eval_batches_are_ordered_and_padded():
    corpus, t = counting_corpus(), 4  # 15 rows
    batches = make_eval_batches(corpus, seq_len=t, batch_size=4, max_rows=6)
    assert len(batches) == 2 and all(b["tokens"].shape == (4, t) for b in batches)
    np.testing.assert_array_equal(_row_ids(batches, t)[:6], range(6))
    assert batches[1]["loss_mask"][2:].sum() == 0 and batches[1]["loss_mask"][:2].all()
    assert len(make_eval_batches(corpus, seq_len=t, batch_size=4)) == 4
    with pytest.raises(ValueError, match="no full batch"):
        make_train_iterator(corpus, seq_len=t, batch_size=16, seed=0, num_epochs=1)


# --- end to end: the packing contract of the model ------------------------------------------


def test_packed_batch_logits_equal_each_document_alone():
    cfg = hybrid_config()
    rng = np.random.default_rng(0)
    lengths = [5, 13, 3, 9, 20, 4]  # not multiples of the SSD chunk (8); some span rows
    docs = [rng.integers(2, cfg.vocab_size, n) for n in lengths]
    corpus = Corpus([np.concatenate(docs)], np.cumsum([0] + lengths[:-1]))
    t = 16
    (batch,) = make_eval_batches(corpus, seq_len=t, batch_size=4)  # 53 tokens -> 4 rows

    # Every segment of every row, run alone (right-padded to T: the model is causal).
    segments, alone = [], []
    for r in range(batch["tokens"].shape[0]):
        for s in np.unique(batch["seq_idx"][r]):
            cols = np.flatnonzero(batch["seq_idx"][r] == s)
            segments.append((r, cols))
            alone.append(np.pad(batch["tokens"][r, cols], (0, t - len(cols))))
    assert len(segments) > 2 * batch["tokens"].shape[0]

    # One call (one compile): the packed rows, then each segment alone as a single document.
    n = len(alone)
    tokens = np.concatenate([batch["tokens"], np.stack(alone)])
    seq_idx = np.concatenate([batch["seq_idx"], np.zeros((n, t), np.int32)])
    positions = np.concatenate([batch["positions"], np.tile(np.arange(t, dtype=np.int32), (n, 1))])
    model = HybridLM(cfg, rngs=nnx.Rngs(0))
    fwd = jax.jit(lambda m, x, s, p: m(x, seq_idx=s, positions=p))
    logits = np.asarray(fwd(model, tokens, seq_idx, positions))
    packed, single = logits[: len(batch["tokens"])], logits[len(batch["tokens"]) :]
    for k, (r, cols) in enumerate(segments):
        np.testing.assert_allclose(packed[r, cols], single[k, : len(cols)], rtol=1e-4, atol=1e-5)
    # ... and a document continued from the previous row is exactly its piece run alone.
    assert batch["positions"][1, 0] == 0 and batch["seq_idx"][1, 0] == 0
