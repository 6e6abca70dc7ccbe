"""Markdown tables of the pod plan (experiments/scale_plan.py)."""

from __future__ import annotations

GIB = 2.0**30


def _g(v: float) -> str:
    return f"{v / GIB:.1f}"


def _layout_name(m: dict) -> str:
    return f"data {m['data']} x fsdp {m['fsdp']} x tensor {m['tensor']}"


def to_markdown(res: dict) -> str:
    t, s = res["teacher"], res["student"]
    lines = [
        f"Teacher {t['name']} ({t['params'] / 1e9:.2f}B, bf16) -> student {s['name']} "
        f"({s['params'] / 1e9:.2f}B, fp32 masters + AdamW), attention impl "
        f"{res.get('attn_impl', 'default')}, T = {res['seq_len']}, global "
        f"batch {res['global_batch']} sequences, forward KL chunked over the sequence (128). "
        f"Memory: XLA's compiled memory analysis per device (jax {res['jax']}), extrapolated "
        f"per block from reduced-depth compiles. Tokens/s: model FLOPs at "
        f"{res['mfu']:.0%} MFU of {res['peak_tflops']:.0f} TFLOP/s per device.",
        "",
        "| layout | remat | params+opt GiB | teacher GiB | temp GiB | peak GiB | fits 80 GB "
        "| tokens/s (8 GPUs) | s / step (global batch) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lay in res["layouts"]:
        for name, v in lay["variants"].items():
            full, args = v["full"], v["full_args_expected"]
            so = args["student_params"] + args["opt_state"]
            lines.append(
                f"| {_layout_name(lay['mesh'])} | {name} | {_g(so)} | "
                f"{_g(args['teacher'])} | {_g(full['temp'])} | "
                f"{_g(full['peak'])} | {'yes' if v['fits_80gb'] else 'no'} | "
                f"{v['tokens_per_s']:,.0f} | {v['step_s_global_batch']:.1f} |"
            )
    lines += ["", "Probes (reduced depth, full widths; per device):", ""]
    lines += ["| layout | remat | pattern | arguments GiB | temp GiB | peak GiB | compile s |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for lay in res["layouts"]:
        for name, v in lay["variants"].items():
            for p in v["probes"].values():
                m = p["memory"]
                lines.append(
                    f"| {_layout_name(lay['mesh'])} | {name} | `{p['pattern']}` | "
                    f"{_g(m['arguments'])} | {_g(m['temp'])} | {_g(m['peak'])} | "
                    f"{p['compile_s']:.0f} |"
                )
    return "\n".join(lines) + "\n"
