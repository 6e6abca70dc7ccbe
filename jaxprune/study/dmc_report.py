"""``DMC.md``: the miniature DMC experiment's table (:mod:`jaxprune.study.dmc_mini`)."""

from __future__ import annotations


def _f(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def render(res: dict) -> str:
    m = res["mini"]
    lines = [
        "# DMC vs GQA up-training at equal cache size, miniature",
        "",
        f"`{res['command']}`, {res['date']}, {res['machine']['platform']}, "
        f"{res['machine']['cpus']} CPUs.",
        "",
        f"Teachers trained on {res['teacher_tokens']:,} tokens of the study's data (BPE "
        f"vocabulary of the study): "
        + "; ".join(
            f"{k} {t['params']:,} parameters, held-out loss {t['loss']:.3f}"
            for k, t in res["teachers"].items()
        )
        + f". Every student is distilled from its teacher for {res['retrofit_tokens']:,} "
        "tokens (one seed). DMC: the retrofit at target ratio r. GQA: KV heads mean-pooled "
        f"{m['kv_heads']} -> {m['kv_heads']} / r, then up-trained. Losses on "
        f"{res['eval_rows']} held-out rows of {res['seq_len']} tokens.",
        "",
        f"Long context: greedy decode of {m['decode_new']} tokens after a {m['context']:,}-"
        "token held-out prompt, batch 1, fp32 cache. *KV+state* is the cache allocated per "
        "sequence; a DMC cache is cut after the prefill to the slots its heads used plus "
        "the tokens still to decode (rounded up to 64; `Cache.fit_dmc`), the longest head "
        "setting the size for all, and decoding attends over those slots. *Max batch* is "
        "the most sequences whose caches plus the fp32 weights fit "
        f"{m['memory_gb']} GB at that context.",
        "",
        "| model | method | r | loss before | loss after | tokens/slot (held-out) | "
        "tokens/slot (4k) | KV+state MiB/seq (4k) | decode tok/s | max batch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        kv = r["kv_compression"]
        lkv = r["long_kv_compression"]
        held = kv["ratio"] if kv else (1.0 * r["ratio"] if r["method"] == "gqa" else 1.0)
        long = lkv["ratio"] if lkv else held
        lines.append(
            f"| {r['kind']} | {r['method']} | {r['ratio']} | {_f(r['loss_before'], '.3f')} | "
            f"{r['loss']:.3f} | {held:.2f} | {long:.2f} | "
            f"{r['state_bytes_per_seq'] / 2**20:.2f} | {_f(r['decode_tok_s'], '.0f')} | "
            f"{r['max_batch']} |"
        )
    lines += [
        "",
        "For GQA, tokens/slot is the cache reduction relative to the teacher (r).",
        "",
        "![DMC compression per block and KV head](dmc_heads.png)",
        "",
    ]
    return "\n".join(lines)
