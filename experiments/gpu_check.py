"""Everything GPU-specific, verified and timed in one short run (issue 15 item 5).

    python -m experiments.gpu_check [--dry-run] [--out DIR] [--skip SECTION,...]
        [--budget-s 450] [--no-isolate]

Sections (each catches its own failure, records the traceback and the run goes on):

* ``ssd_check``   every SSD impl in ``SSD_IMPLS`` (the Pallas kernels compiled on a GPU) vs
  the reference, values and the gradient of every input, at two shapes; the reference vs the
  sequential recurrence.
* ``ssd_pytest``  (GPU only) tests/kernels/test_ssd_pallas.py::TestSsdPallas, the check that
  lets "pallas" into ``VERIFIED["gpu"]`` (jaxprune/kernels/ssd/api.py).
* ``ssd_timing``  SSD forward and forward+backward, every impl and mamba_ssm if importable,
  Nemotron-H-8B layer shape, T = 2k and 8k, bf16.
* ``attention``   `jaxprune.ops.attention.dot_product_attention`: cuDNN (GPU only), the
  reference and the blockwise version at 8k, values and timings.
* ``kd_step``     one bf16 KD step for bench-10m and the ~1B preset (and the 1B with the
  Pallas SSD on a GPU): time, tokens/s, XLA memory analysis and the device's peak memory.

Units run in priority order (``UNITS``); one that no longer fits ``--budget-s`` is skipped
with that reason. On a GPU each unit runs in its own process (one unit's crash or memory
peak does not touch the others) within the budget. ``--dry-run``: tiny shapes on any
backend, in process (about a minute of CPU time); GPU-only parts are recorded as skipped with the
reason. Writes ``results.json`` and ``results.md`` under ``--out`` (default $OUT or
runs/gpu_check) and prints the table and the Pallas verdict last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from experiments.gpu_report import PALLAS_TEST, pallas_verdict, to_markdown

#: unit name -> (section, seconds it may take on a GPU, GPU only)
UNITS: dict[str, tuple[str, int, bool]] = {  # in order of priority
    "ssd_check": ("ssd_check", 60, False),
    "ssd_timing": ("ssd_timing", 110, False),
    "attention": ("attention", 70, False),
    "kd_step/bench-10m": ("kd_step", 50, False),
    "kd_step/nemotron-h-1b": ("kd_step", 80, False),
    "ssd_pytest": ("ssd_pytest", 150, True),
    "kd_step/nemotron-h-1b/pallas": ("kd_step", 80, True),
}
SECTIONS = tuple(dict.fromkeys(s for s, _, _ in UNITS.values()))


def run_unit(unit: str, dry: bool) -> dict:
    """Run one unit in this process -> its result dict (raises on failure)."""
    if unit == "ssd_check":
        from experiments.gpu_ssd import ssd_check

        return ssd_check(dry)
    if unit == "ssd_timing":
        from experiments.gpu_ssd import ssd_timing

        return ssd_timing(dry)
    if unit == "attention":
        from experiments.gpu_attention import attention

        return attention(dry)
    if unit == "ssd_pytest":
        return _pytest_pallas()
    if unit.startswith("kd_step/"):
        from experiments.gpu_kd import kd_case

        parts = unit.split("/")
        return kd_case(parts[1], dry, ssd_impl=parts[2] if len(parts) > 2 else "auto")
    raise ValueError(f"unknown unit {unit!r}")


def _pytest_pallas() -> dict:
    node = PALLAS_TEST
    cmd = [sys.executable, "-m", "pytest", node, "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=UNITS["ssd_pytest"][1])
    tail = (proc.stdout + proc.stderr)[-3000:]
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "tail": tail}


def _guarded(unit: str, dry: bool) -> dict:
    t0 = time.perf_counter()
    try:
        out = {"status": "ok", "result": run_unit(unit, dry)}
    except Exception as err:  # one broken kernel must not lose the other figures
        out = {"status": "failed", "error": f"{type(err).__name__}: {str(err)[:500]}"}
        out["traceback"] = traceback.format_exc()
    out["seconds"] = time.perf_counter() - t0
    return out


def _isolated(unit: str, dry: bool, timeout: float, tmp: Path) -> dict:
    """The unit in a child process (``--unit``), its record read back from a file."""
    path = tmp / (unit.replace("/", "__") + ".json")
    cmd = [sys.executable, "-m", "experiments.gpu_check", "--unit", unit, "--unit-out", str(path)]
    cmd += ["--dry-run"] if dry else []
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        tail = (err.stderr or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s", "tail": tail}
    if path.is_file():
        return json.loads(path.read_text())
    tail = (proc.stdout + proc.stderr)[-3000:]
    secs = time.perf_counter() - t0
    return {"status": "failed", "error": f"exit {proc.returncode}", "tail": tail, "seconds": secs}


def _skip_reason(unit: str, skip: set[str], dry: bool, on_gpu: bool) -> str | None:
    section, _, gpu_only = UNITS[unit]
    if section in skip or unit in skip:
        return "--skip"
    if gpu_only and (dry or not on_gpu):
        return "GPU only (compiled Pallas kernels)" if not on_gpu else "GPU only, not in a dry run"
    return None


def run_all(dry: bool, skip: set[str], isolate: bool, budget_s: float) -> dict:
    import jax

    on_gpu = jax.default_backend() == "gpu"
    meta = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "dry_run": dry,
        "isolated": isolate,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    units: dict[str, dict] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for unit, (_, need, _) in UNITS.items():
            reason = _skip_reason(unit, skip, dry, on_gpu)
            left = budget_s - (time.perf_counter() - start)
            if reason is None and not dry and left < min(need, 30):
                reason = f"out of time budget ({left:.0f} s left)"
            if reason is not None:
                units[unit] = {"status": "skipped", "reason": reason}
                continue
            print(f"[gpu_check] {unit} ...", flush=True)
            if isolate:
                units[unit] = _isolated(unit, dry, max(30.0, min(left, 2 * need)), Path(tmp))
            else:
                units[unit] = _guarded(unit, dry)
            print(f"[gpu_check] {unit}: {units[unit]['status']}", flush=True)
    meta["seconds"] = time.perf_counter() - start
    return {"meta": meta, "units": units, "pallas": pallas_verdict(units, on_gpu, dry)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes, any backend")
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check")
    ap.add_argument("--skip", default="", help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=450.0, help="whole run, GPU")
    ap.add_argument("--no-isolate", action="store_true", help="run every unit in process")
    ap.add_argument("--unit", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--unit-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = {s for s in args.skip.split(",") if s} - set(SECTIONS) - set(UNITS)
    if unknown:
        ap.error(f"--skip: unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.unit:  # a child process: one unit, its record to --unit-out
        rec = _guarded(args.unit, args.dry_run)
        Path(args.unit_out).write_text(json.dumps(rec, indent=1, default=str))
        return rec
    skip = {s for s in args.skip.split(",") if s}
    if args.dry_run:  # rbg keys compile far faster than threefry on a CPU
        import jax

        jax.config.update("jax_default_prng_impl", "rbg")
    isolate = not (args.dry_run or args.no_isolate)
    res = run_all(args.dry_run, skip, isolate, args.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    md = to_markdown(res)
    (out / "results.md").write_text(md)
    print(md)
    print(res["pallas"]["message"])
    return res


if __name__ == "__main__":
    main()
