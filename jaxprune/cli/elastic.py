"""``jaxprune elastic`` and ``jaxprune extract``: thin commands over
:func:`jaxprune.elastic.run.train_elastic` and :meth:`jaxprune.elastic.run.Elastic.child`.

    jaxprune elastic MODEL --data FILE (--budgets 1.0,0.75,0.5 | --memory-gb 2,1.5)
        --steps N --out DIR [--uniform] [--budget-probs P,..]
        [--stage2-from STEP [--stage2-probs P,..] [--stage2-seq-len N]]
        [--scores FILE | --calib-samples N] [run flags of distill] [--resume]
    jaxprune extract ELASTIC OUT --budget 0.75

``elastic`` ranks MODEL (``--scores`` from ``jaxprune importance --depth-method nmse``, or
a calibration on ``--data`` now), permutes it into importance order and trains it with the
router, distilling from MODEL as it was; OUT is then the trained parent (a native model)
plus ``router.npz`` and ``elastic.json``. ``extract`` writes one trained budget's child as
a native checkpoint. Budgets are fractions of MODEL's parameters (<= 1) or counts (4e9).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from jaxprune.cli.train import _common, build_train_config, guarded
from jaxprune.errors import UserError


def _floats(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one number")
    return out


def _elastic_config(args, budgets):
    from jaxprune.elastic.objective import ElasticConfig

    n = len(budgets)
    for name in ("budget_probs", "stage2_probs"):
        p = getattr(args, name)
        if p is not None and (len(p) != n or min(p) < 0 or sum(p) <= 0):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} needs {n} non-negative weights (one per budget), got {p}")
    if args.stage2_probs is not None and args.stage2_from is None:
        raise UserError("--stage2-probs needs --stage2-from STEP")
    if args.stage2_from is not None and not args.stage2_from > 0:
        raise UserError(f"--stage2-from must be a step >= 1, got {args.stage2_from}")
    return ElasticConfig(
        budgets,
        probs=args.budget_probs,
        stage2_probs=args.stage2_probs,
        stage2_from=args.stage2_from,
        budget_weight=args.budget_weight,
        router_lr=args.router_lr,
    )


def _memory_budgets(args, cfg):
    """(Memory, byte budgets) of ``--memory-gb``: one at or above the parent's memory (the
    full model, clipped to it), the others below it."""
    from jaxprune.elastic.budget import Memory
    from jaxprune.search.space import memory_bytes

    mem = Memory(batch=args.memory_batch, context=args.memory_context)
    parent = memory_bytes(cfg, batch=mem.batch, context=mem.context)["total"]
    gb = sorted(args.memory_gb, reverse=True)
    if gb[0] * 1e9 < parent:
        raise UserError(
            f"elastic: include the full model: one --memory-gb at or above the parent's "
            f"{parent / 1e9:.4g} GB (batch {mem.batch}, context {mem.context})"
        )
    if min(gb) <= 0 or len(set(gb)) != len(gb) or (len(gb) > 1 and gb[1] * 1e9 >= parent):
        raise UserError(
            f"elastic: --memory-gb needs distinct positive budgets, one per child, got {gb}"
        )
    return mem, tuple([float(parent)] + [g * 1e9 for g in gb[1:]])


def cmd_elastic(args: argparse.Namespace) -> int:
    from jaxprune.cli.prune import _rows, _scores_file
    from jaxprune.counts import count_params
    from jaxprune.data import load_corpus
    from jaxprune.data.pipeline import check_one_batch
    from jaxprune.elastic.run import SpaceArgs, resolve_budgets, train_elastic
    from jaxprune.models import resolve_model
    from jaxprune.pruning.scoring import Scores, score_model

    cfg = build_train_config(args, distill=True)
    if args.stage2_seq_len is not None:
        if args.stage2_from is None:
            raise UserError("--stage2-seq-len needs --stage2-from STEP")
        cfg = cfg.replace(seq_len_stages=((args.stage2_from, args.stage2_seq_len),))
    if not cfg.loss.uses_teacher:
        raise UserError("elastic: the loss must distill from the parent (kl or intermediate)")
    if (args.budgets is None) == (args.memory_gb is None):
        raise UserError("elastic: give exactly one of --budgets and --memory-gb")
    loaded = resolve_model(args.model, tokenizer=args.tokenizer)
    full = count_params(loaded.config)["total"]
    memory = None
    if args.memory_gb is not None:
        memory, budgets = _memory_budgets(args, loaded.config)
    else:
        budgets = resolve_budgets(args.budgets, full)
        if max(budgets) < full:
            raise UserError("elastic: include the full budget (1.0): the parent is trained too")
    el = dataclasses.replace(_elastic_config(args, budgets), memory=memory)
    space_args = SpaceArgs(uniform=args.uniform, max_skip=args.max_skip)
    vocab = loaded.config.vocab_size
    train_src = load_corpus(args.data, tokenizer=loaded.tokenizer, vocab_size=vocab)
    check_one_batch(train_src, batch_size=cfg.batch_size, seq_len=cfg.seq_len, what="data")
    if args.scores:
        _scores_file(args.scores)
        scores = Scores.load(args.scores, loaded.config)
    else:
        rows = _rows(loaded, args.data, args.calib_seq_len or cfg.seq_len, args.calib_samples)
        print(f"calibrating on {len(rows)} rows...", file=sys.stderr, flush=True)
        scores = score_model(loaded.model, rows, depth_methods=("nmse",), progress=True)
    print("compiling the elastic step (the first step takes longest)...", file=sys.stderr)
    result, status = guarded(
        lambda: train_elastic(
            loaded.model,
            scores,
            train_source=train_src,
            out=Path(args.out),
            train=cfg,
            elastic=el,
            space_args=space_args,
            resume=args.resume,
            family=loaded.family,
            hf_config=loaded.hf_config,
            aux_dir=loaded.source,
        ),
        args.out,
    )
    if status is not None:
        return status
    info = json.loads((Path(args.out) / "elastic.json").read_text())
    if args.json:
        print(json.dumps({"step": result.step, "children": info["children"]}))
        return 0
    print(f"done: elastic checkpoint written to {args.out} ({result.step} steps)")
    for c in info["children"]:
        frac = c["params"] / full
        mem = "" if memory is None else f", {c['cost'] / 1e9:.4g} GB"
        print(
            f"  budget {c['budget']:>14,.0f}: {c['params']:>14,} parameters ({frac:.1%} of the "
            f"parent){mem}, {c['moves']} adjustment(s)"
        )
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from jaxprune.converters.native import save_native
    from jaxprune.counts import count_params
    from jaxprune.elastic.run import load_elastic

    e = load_elastic(args.elastic)
    rec = e.child_record(args.budget)
    child = e.child(args.budget)
    save_native(args.out, child, family=e.meta.get("family"), aux_dir=args.elastic)
    n = count_params(child.config)["total"]
    print(f"wrote the {args.budget} child ({n:,} parameters) to {args.out}")
    assert n == rec["params"]
    return 0


def add_parsers(sub) -> None:
    sp = sub.add_parser("elastic", help="train nested submodels of one parent with a router")
    sp.add_argument("model", help="the parent (native checkpoint, HF dir or preset)")
    sp.add_argument("--budgets", type=_floats, default=None, help="e.g. 1.0,0.75,0.5 or 4e9,..")
    sp.add_argument(
        "--memory-gb",
        type=_floats,
        default=None,
        help="budgets in inference memory (weights + KV + state, bf16) instead, e.g. 2,1.5,1",
    )
    sp.add_argument("--memory-batch", type=int, default=1, help="batch of --memory-gb")
    sp.add_argument("--memory-context", type=int, default=4096, help="context of --memory-gb")
    sp.add_argument("--uniform", action="store_true", help="one FFN width for all layers")
    sp.add_argument("--budget-probs", type=_floats, default=None, help="stage-1 weights")
    sp.add_argument("--stage2-from", type=int, default=None, help="first step of stage 2")
    sp.add_argument("--stage2-probs", type=_floats, default=None, help="stage-2 weights")
    sp.add_argument(
        "--stage2-seq-len", type=int, default=None, help="stage-2 sequence length (same batch)"
    )
    sp.add_argument("--budget-weight", type=float, default=1.0, help="weight of the budget loss")
    sp.add_argument("--router-lr", type=float, default=1e-2, help="the router's step size")
    sp.add_argument("--max-skip", type=float, default=0.25, help="most blocks skipped (fraction)")
    sp.add_argument("--scores", default=None, help="scores with a depth_nmse ranking")
    sp.add_argument("--calib-samples", type=int, default=256, help="calibration rows")
    sp.add_argument("--calib-seq-len", type=int, default=None, help="default: --seq-len")
    _common(sp)
    sp.set_defaults(fn=cmd_elastic)

    sp = sub.add_parser("extract", help="one budget's child of an elastic checkpoint")
    sp.add_argument("elastic", help="the OUT of `jaxprune elastic`")
    sp.add_argument("out", help="directory for the child (native checkpoint)")
    sp.add_argument("--budget", type=float, required=True, help="a trained budget")
    sp.set_defaults(fn=cmd_extract)
