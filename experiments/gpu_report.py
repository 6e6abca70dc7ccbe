"""The GPU check's Markdown report and its verdict on the Pallas SSD kernels."""

from __future__ import annotations

from typing import Any


def _f(v: Any, fmt: str = ".3f") -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return format(v, fmt)
    return str(v)


PALLAS_TEST = "tests/kernels/test_ssd_pallas.py::TestSsdPallas"


def pallas_verdict(units: dict[str, dict], on_gpu: bool, dry: bool) -> dict:
    """Whether the compiled Pallas SSD passed both the ssd_check rows and TestSsdPallas."""
    check = units.get("ssd_check", {})
    rows = [r for r in check.get("result", {}).get("rows", []) if r["impl"] == "pallas"]
    test = units.get("ssd_pytest", {})
    test_ok = test.get("status") == "ok" and test["result"]["returncode"] == 0
    values_ok = bool(rows) and all(r.get("passed") for r in rows)
    if dry or not on_gpu:
        passed = False
        why = "no GPU run (dry run / CPU: the Pallas kernels ran in the interpreter at most)"
    else:
        passed = values_ok and test_ok
        why = f"ssd_check pallas rows passed: {values_ok}; TestSsdPallas passed: {test_ok}"
        if test.get("status") == "skipped":
            why += f" (skipped: {test.get('reason')}; run it alone: pytest {PALLAS_TEST})"
    if passed:
        msg = 'PALLAS SSD: PASSED on this GPU -> add "pallas" to VERIFIED["gpu"] in api.py'
    else:
        msg = f"PALLAS SSD: NOT VERIFIED ({why}); leave VERIFIED['gpu'] as it is"
    return {"passed": passed, "values_ok": values_ok, "pytest_ok": test_ok, "message": msg}


def _ssd_check(res: dict) -> list[str]:
    lines = [
        "| shape | impl | passed | worst | worst rel err | tolerance |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['impl']} | False | {r['error'][:120]} | | |")
            continue
        lines.append(
            f"| {r['shape']} | {r['impl']} | {r['passed']} | {r['worst']} | "
            f"{r['worst_rel_err']:.2e} | {r['tolerance']:.0e} |"
        )
    return lines


def _timing(rows: list[dict], keys: tuple[str, ...]) -> list[str]:
    head = [*keys, "pass", "ms (median)", "best ms", "round spread", "TFLOP/s", "first call s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lead = [str(r.get(k, "")) for k in keys] + [r["pass"]]
        if "error" in r:
            lines.append("| " + " | ".join(lead) + f" | {r['error'][:120]} | | | | |")
            continue
        vals = [_f(r["ms"]), _f(r["best_ms"]), f"{r['spread']:.1%}", _f(r.get("TFLOPs"), ".2f")]
        vals.append(_f(r["first_call_s"], ".1f"))
        lines.append("| " + " | ".join(lead + vals) + " |")
    return lines


def _ssd_timing(res: dict) -> list[str]:
    c, s = res["ceilings"], res["shape"]
    lines = [
        f"Shape H={s['H']} P={s['P']} N={s['N']} G={s['G']} Q={s['Q']} b=1 {s['dtype']}; "
        f"ceilings measured: copy {c['copy_GBps']:.0f} GB/s, bf16 matmul "
        f"{c['matmul_TFLOPs']:.1f} TFLOP/s. {' '.join(res['notes'])}",
        "",
    ]
    return lines + _timing(res["rows"], ("T", "impl"))


def _attention(res: dict) -> list[str]:
    p = res["plan"]
    lines = [f"b={p['b']} T={p['T']} Hq={p['Hq']} Hkv={p['Hkv']} D={p['D']} {p['dtype']}, causal."]
    lines += ["", "| impl | passed | rel err out | rel err grad |", "|---|---|---|---|"]
    for r in res["checks"]:
        err = r.get("error", "")[:120]
        lines.append(
            f"| {r['impl']} | {r['passed']} | {_f(r.get('rel_err_out'), '.2e')} | "
            f"{_f(r.get('rel_err_grad'), '.2e')} {err} |"
        )
    if res["skipped_impls"]:
        lines += ["", "Skipped: " + "; ".join(res["skipped_impls"])]
    return lines + [""] + _timing(res["rows"], ("impl",))


def _kd(res: dict) -> list[str]:
    mem = res.get("compiled_memory") or {}
    gib = 2.0**30
    peak = res.get("peak_bytes_in_use")
    return [
        "| student / teacher params | b x T | ms (median) | tokens/s | TFLOP/s (6N+2N') | "
        "XLA peak GiB | device peak GiB | loss |",
        "|---|---|---|---|---|---|---|---|",
        f"| {res['student_params']:,} / {res['teacher_params']:,} | {res['batch']} x {res['T']} | "
        f"{_f(res.get('ms'))} | {_f(res.get('tokens_per_s'), ',.0f')} | "
        f"{_f(res.get('TFLOPs_model'), '.1f')} | {_f(mem.get('peak', 0) / gib, '.2f')} | "
        f"{'' if peak is None else format(peak / gib, '.2f')} | {_f(res['loss'], '.4f')} |",
    ]


RENDER = {"ssd_check": _ssd_check, "ssd_timing": _ssd_timing, "attention": _attention}


def to_markdown(res: dict) -> str:
    m = res["meta"]
    lines = [
        f"# GPU check ({m['device']}, {m['backend']}, jax {m['jax']}, {m['date']})",
        "",
        f"Dry run: {m['dry_run']}; units in separate processes: {m['isolated']}; "
        f"{m['seconds']:.0f} s in all. {res['pallas']['message']}",
        "",
        "| unit | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, u in res["units"].items():
        note = u.get("reason") or u.get("error") or ""
        lines.append(f"| {name} | {u['status']} | {_f(u.get('seconds'), '.1f')} | {note[:150]} |")
    for name, u in res["units"].items():
        if u["status"] != "ok":
            continue
        lines += ["", f"## {name}", ""]
        r = u["result"]
        if name == "ssd_pytest":
            lines += [
                f"`{r['command']}`: exit {r['returncode']}",
                "",
                "```",
                r["tail"][-800:],
                "```",
            ]
        elif name.startswith("kd_step"):
            lines += _kd(r)
        else:
            lines += RENDER[name](r)
    return "\n".join(lines) + "\n"
