"""``jaxprune importance`` and ``jaxprune prune``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from jaxprune.pruning.importance import AGGREGATIONS

DEPTH_METHODS = {
    "block_influence": "depth_block_influence",
    "loss": "depth_loss",
    "nmse": "depth_nmse",
}


def _calibration_rows(model_path: str, args: argparse.Namespace) -> np.ndarray:
    from jaxprune.converters.api import model_tokenizer
    from jaxprune.evaluation import load_eval_rows

    tokenizer = model_tokenizer(model_path)
    return load_eval_rows(
        args.data, seq_len=args.seq_len, tokenizer=tokenizer, max_rows=args.samples
    )


def _score(model, model_path: str, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    import jax

    from jaxprune.evaluation import check_rows
    from jaxprune.pruning import depth
    from jaxprune.pruning.importance import calibrate, scores
    from jaxprune.sharding import batch_sharding, make_mesh

    rows = check_rows(_calibration_rows(model_path, args), model.config.vocab_size)
    bs = args.batch_size
    batches = [rows[i : i + bs] for i in range(0, len(rows), bs)]
    shardings = None
    if jax.device_count() > 1 and bs % jax.device_count() == 0:
        shardings = batch_sharding(make_mesh(data=-1))  # sums add up across devices
    stats = calibrate(
        model, batches, aggregation=args.aggregation, progress=True, shardings=shardings
    )
    sc = scores(stats, model, args.aggregation)
    if args.depth_method == "loss":
        sc["depth_loss"] = depth.loss_increase(model, batches[: args.depth_batches])
    elif args.depth_method == "nmse":
        sc["depth_nmse"] = depth.iterative_nmse(model, batches[: args.depth_batches])
    meta = {
        "model": str(model_path),
        "data": str(args.data),
        "samples": int(len(rows)),
        "seq_len": int(rows.shape[1]),
        "aggregation": args.aggregation,
        "depth_method": args.depth_method,
    }
    return sc, stats, meta


def cmd_importance(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import load_model
    from jaxprune.pruning.scores_io import save_scores

    model, _ = load_model(args.model)
    sc, stats, meta = _score(model, args.model, args)
    path = save_scores(args.out, sc, stats, meta, model.config)
    print(f"wrote scores for {meta['samples']} samples x {meta['seq_len']} tokens to {path}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import load_model
    from jaxprune.converters.fsutil import atomic_output_dir, copy_aux_files
    from jaxprune.converters.native import save_model
    from jaxprune.counts import count_params
    from jaxprune.pruning.prune import prune
    from jaxprune.pruning.scores_io import load_scores
    from jaxprune.pruning.targets import parse_targets, validate_targets

    if bool(args.scores) == bool(args.data):
        raise ValueError("give exactly one of --scores or --data")
    targets = parse_targets(args.target)
    model, meta = load_model(args.model)
    validate_targets(model.config, targets)
    depth_key = DEPTH_METHODS[args.depth_method]
    if args.scores:
        sc, _ = load_scores(args.scores, model.config)
    else:
        sc, _, _ = _score(model, args.model, args)
    if depth_key not in sc and ("num_hidden_layers" in targets):
        raise ValueError(
            f"the scores have no {args.depth_method} depth ranking; rerun "
            f"importance with --depth-method {args.depth_method}"
        )
    small = prune(model, sc, targets, depth_key)
    src = Path(args.model)
    with atomic_output_dir(Path(args.out)) as tmp:
        save_model(tmp, small, family=meta.get("family"), hf_config=meta.get("hf_config"))
        copy_aux_files(src, tmp)
    before, after = count_params(model.config), count_params(small.config)
    print(f"{'params':<12}{'before':>16}{'after':>16}{'ratio':>8}")
    for k in before:
        a = after.get(k, 0)
        print(f"{k:<12}{before[k]:>16,}{a:>16,}{a / before[k]:>8.2f}")
    print(f"pattern {model.config.pattern} -> {small.config.pattern}; wrote {args.out}")
    return 0


def _calibration_args(sp: argparse.ArgumentParser, required: bool) -> None:
    sp.add_argument("--data", required=required, help=".txt, .jsonl or .npy calibration data")
    sp.add_argument("--samples", type=int, default=1024, help="calibration sequences")
    sp.add_argument("--seq-len", type=int, default=512)
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--aggregation", choices=AGGREGATIONS, default="l2")
    sp.add_argument("--depth-method", choices=sorted(DEPTH_METHODS), default="block_influence")
    sp.add_argument(
        "--depth-batches",
        type=int,
        default=4,
        help="batches used by the loss / nmse depth rankings",
    )


def add_parsers(sub) -> None:
    sp = sub.add_parser("importance", help="activation importance scores from calibration data")
    sp.add_argument("model")
    sp.add_argument("--out", required=True, help="scores file (.npz)")
    _calibration_args(sp, required=True)
    sp.set_defaults(fn=cmd_importance)

    sp = sub.add_parser("prune", help="prune a model to targets (HF config names)")
    sp.add_argument("model")
    sp.add_argument("out")
    sp.add_argument("--scores", help="scores from `jaxprune importance`")
    sp.add_argument(
        "--target",
        required=True,
        help="e.g. hidden_size=3072,mamba_num_heads=112,num_hidden_layers=40",
    )
    _calibration_args(sp, required=False)
    sp.set_defaults(fn=cmd_prune)


def cmd_search(args: argparse.Namespace) -> int:
    from jaxprune.converters.api import load_model
    from jaxprune.converters.fsutil import atomic_output_dir, copy_aux_files
    from jaxprune.converters.native import save_model
    from jaxprune.counts import count_params
    from jaxprune.evaluation import check_rows
    from jaxprune.pruning.prune import prune
    from jaxprune.pruning.scores_io import load_scores
    from jaxprune.search.report import write_report
    from jaxprune.search.search import Budget, evaluate, shortlist
    from jaxprune.search.space import SearchSpace

    model, meta = load_model(args.model)
    if args.scores:
        sc, _ = load_scores(args.scores, model.config)
    else:
        sc, _, _ = _score(model, args.model, args)
    budget = Budget(
        params=args.params,
        active=args.active,
        memory_gb=args.memory_gb,
        batch=args.memory_batch,
        context=args.memory_context,
    )
    space = SearchSpace(max_prune=args.max_prune, divisor=args.divisor)
    cands = shortlist(model, sc, budget, space, args.top_k)
    rows = check_rows(_calibration_rows(args.model, args), model.config.vocab_size)
    rows = rows[: args.eval_samples]
    distill = None
    if args.distill_steps:
        from jaxprune.search.distill import make_short_distill

        distill = make_short_distill(model, rows, steps=args.distill_steps)
    cands = evaluate(model, sc, cands, rows, distill=distill, batch_size=args.batch_size)
    best = min(cands, key=lambda c: c.final_loss)
    with atomic_output_dir(Path(args.out)) as tmp:
        write_report(tmp, cands, best, count_params(model.config))
        save_model(
            _mkdir(tmp / "best"),
            prune(model, sc, best.targets),
            family=meta.get("family"),
            hf_config=meta.get("hf_config"),
        )
        copy_aux_files(Path(args.model), tmp / "best")
    print((Path(args.out) / "report.md").read_text())
    return 0


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def add_search_parser(sub) -> None:
    sp = sub.add_parser("search", help="architecture search under a parameter budget")
    sp.add_argument("model")
    sp.add_argument(
        "--params",
        type=float,
        required=True,
        help="budget: <= 1 is a fraction of the source, else a count (4e9)",
    )
    sp.add_argument("--active", action="store_true", help="budget active (MoE) parameters")
    sp.add_argument("--memory-gb", type=float, default=None)
    sp.add_argument("--memory-batch", type=int, default=1)
    sp.add_argument("--memory-context", type=int, default=4096)
    sp.add_argument("--top-k", type=int, default=10)
    sp.add_argument("--distill-steps", type=int, default=0)
    sp.add_argument("--max-prune", type=float, default=0.5)
    sp.add_argument("--divisor", type=int, default=64)
    sp.add_argument("--eval-samples", type=int, default=64)
    sp.add_argument("--scores", help="scores from `jaxprune importance` (else calibrate)")
    sp.add_argument("--out", required=True)
    _calibration_args(sp, required=True)
    sp.set_defaults(fn=cmd_search)
