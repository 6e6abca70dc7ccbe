"""Where the time of a compiled XLA:CPU program goes: its optimized HLO, grouped by category.

Each HLO instruction is given a category from the Python stack that produced it (the
``stack_frame_id`` metadata of the optimized HLO: the innermost jaxprune / optax frame
decides), or ``layout`` when it is a copy / transpose (or a fusion whose root is one).
:func:`dot_flops` counts matmul FLOPs per category (loop bodies times their known trip
count); :func:`traced_times` runs the program under ``jax.profiler`` and sums the per-thunk
event durations (XLA:CPU names each thunk after its HLO instruction) per category.
"""

from __future__ import annotations

import glob
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

import jax

#: (category, substrings of a frame's "file:function") checked innermost frame first.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("optimizer", ("optax/", "optax\\", "train/optim.py")),
    ("attention", ("ops/attention.py", "nn/attention.py", "ops/rope.py")),
    ("ssd / mamba2", ("kernels/ssd", "nn/mamba2.py", "ops/conv.py")),
    ("mlp", ("ops/mlp.py", "nn/mlp.py", "ops/moe.py", "nn/moe.py")),
    (
        "lm head + loss",
        ("train/losses.py", "train/fused_loss.py", "ops/loss.py", "nn/model.py:logits"),
    ),
    ("embedding", ("nn/model.py:embed_tokens",)),
    ("norms", ("ops/norms.py", "nn/norms.py")),
    ("step glue (grad sum, where, rng)", ("train/step.py",)),
)
LAYOUT_OPS = {"copy", "transpose"}
CONTROL_OPS = {"while", "conditional", "call", "parameter", "tuple", "get-tuple-element"}

_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][a-z0-9-]*)\((.*)$")
_SHAPE = re.compile(r"[a-z]+\d*\[([0-9,]*)\]")


@dataclass
class Instr:
    name: str
    opcode: str
    shape: tuple[int, ...]
    operands: list[str]
    calls: list[str]
    frame: int | None
    trip: int = 1
    rest: str = ""


@dataclass
class Module:
    """The parsed optimized HLO text."""

    comps: dict[str, list[Instr]] = field(default_factory=dict)
    frames: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (loc, parent)
    entry: str = ""

    @property
    def instrs(self) -> dict[str, Instr]:
        return {i.name: i for comp in self.comps.values() for i in comp}


def _table(lines: list[str], start: str) -> dict[int, str]:
    out, on = {}, False
    for line in lines:
        if line.strip() == start:
            on = True
            continue
        if on:
            if not line.strip():
                break
            k, v = line.split(" ", 1)
            out[int(k)] = v
    return out


def parse(text: str) -> Module:
    """Parse ``compiled.as_text()``: computations, instructions and stack frames."""
    lines = text.splitlines()
    files = {k: v.strip('"') for k, v in _table(lines, "FileNames").items()}
    funcs = {k: v.strip('"') for k, v in _table(lines, "FunctionNames").items()}
    locs = {}
    for k, v in _table(lines, "FileLocations").items():
        f = int(re.search(r"file_name_id=(\d+)", v).group(1))
        fn = int(re.search(r"function_name_id=(\d+)", v).group(1))
        locs[k] = f"{files.get(f, '?')}:{funcs.get(fn, '?')}"
    mod = Module()
    for k, v in _table(lines, "StackFrames").items():
        loc = int(re.search(r"file_location_id=(\d+)", v).group(1))
        parent = int(re.search(r"parent_frame_id=(\d+)", v).group(1))
        mod.frames[k] = (locs.get(loc, "?"), parent)
    comp = None
    for line in lines:
        if line.endswith("{") and not line.startswith(" "):
            comp = line.split(" ")[1 if line.startswith("ENTRY") else 0].lstrip("%")
            if line.startswith("ENTRY"):
                mod.entry = comp
            mod.comps[comp] = []
            continue
        m = _INSTR.match(line)
        if comp is None or m is None:
            continue
        name, shape, opcode, rest = m.groups()
        sm = _SHAPE.match(shape)
        dims = tuple(int(d) for d in sm.group(1).split(",") if d) if sm else ()
        args = rest.split(")", 1)[0]
        fr = re.search(r"stack_frame_id=(\d+)", rest)
        trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
        mod.comps[comp].append(
            Instr(
                name,
                opcode,
                dims,
                re.findall(r"%([\w.\-]+)", args),
                re.findall(
                    r"(?:calls|to_apply|body|condition|branch_computations)=\{?%([\w.\-]+)", rest
                ),
                int(fr.group(1)) if fr else None,
                int(trip.group(1)) if trip else 1,
                rest,
            )
        )
    return mod


def stack(mod: Module, frame: int | None) -> list[str]:
    """ "file:function" of each frame, innermost first."""
    out, seen = [], set()
    while frame is not None and frame in mod.frames and frame not in seen:
        seen.add(frame)
        loc, parent = mod.frames[frame]
        out.append(loc)
        frame = None if parent == frame else parent
    return out


def _root(mod: Module, ins: Instr) -> Instr:
    if ins.opcode == "fusion" and ins.calls and ins.calls[0] in mod.comps:
        body = mod.comps[ins.calls[0]]
        return body[-1] if body else ins
    return ins


def _frame_of(mod: Module, ins: Instr) -> int | None:
    """The instruction's frame, else the first framed instruction of its fused body."""
    if ins.frame is not None:
        return ins.frame
    for sub in mod.comps.get(ins.calls[0], []) if ins.calls else []:
        if sub.frame is not None and sub.opcode not in LAYOUT_OPS | {"bitcast"}:
            return sub.frame
    return None


def category(mod: Module, ins: Instr) -> str:
    """The category of one (top-level, i.e. thunk) instruction."""
    if _root(mod, ins).opcode in LAYOUT_OPS and not _has_dot(mod, ins):
        return "layout copies / transposes"
    for loc in stack(mod, _frame_of(mod, ins)):
        for cat, keys in RULES:
            if any(k in loc for k in keys):
                return cat
    return "other"


def _has_dot(mod: Module, ins: Instr) -> bool:
    if ins.opcode in ("dot", "convolution"):
        return True
    return any(s.opcode in ("dot", "convolution") for c in ins.calls for s in mod.comps.get(c, []))


def _dot(ins: Instr, shapes: dict[str, tuple[int, ...]]) -> float:
    lhs = shapes.get(ins.operands[0], ()) if ins.operands else ()
    cdims = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", ins.rest)
    k = 1
    for d in (int(x) for x in cdims.group(1).split(",") if x) if cdims else ():
        k *= lhs[d] if d < len(lhs) else 1
    n = 1
    for d in ins.shape:
        n *= d
    return 2.0 * n * k


def dot_flops(mod: Module) -> dict[str, float]:
    """Matmul FLOPs per category, each loop body counted ``known_trip_count`` times."""
    shapes = {i.name: i.shape for i in mod.instrs.values()}
    out: dict[str, float] = defaultdict(float)

    def walk(comp: str, mult: int, cat: str | None) -> None:
        for ins in mod.comps.get(comp, []):
            c = cat or (None if ins.opcode in CONTROL_OPS else category(mod, ins))
            if ins.opcode in ("dot", "convolution"):
                out[c or category(mod, ins)] += mult * _dot(ins, shapes)
            m = mult * (ins.trip if ins.opcode == "while" else 1)
            for sub in ins.calls:
                walk(sub, m, c)

    walk(mod.entry, 1, None)
    return dict(out)


def thunk_categories(mod: Module) -> dict[str, str]:
    """Category of every instruction that can run as a thunk."""
    return {i.name: category(mod, i) for i in mod.instrs.values() if i.opcode not in CONTROL_OPS}


def traced_times(fn, args: tuple, cats: dict[str, str], reps: int = 1) -> dict[str, float]:
    """Run ``fn(*args)`` ``reps`` times under ``jax.profiler`` and sum, per category, the
    durations (s, per run) of the thunk events named after HLO instructions in ``cats``."""
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(reps):
                jax.block_until_ready(fn(*args))
        path = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0]
        data = ProfileData.from_file(path)
    out: dict[str, float] = defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                cat = cats.get(ev.name)
                if cat is not None:
                    out[cat] += ev.duration_ns / 1e9 / reps
    return dict(out)
