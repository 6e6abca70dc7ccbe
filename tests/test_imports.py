"""The import structure: only ``jaxprune.cli`` parses arguments or gin, and the packages of
``jaxprune`` import each other without cycles (function-level imports included, so a cycle
cannot hide behind a lazy import)."""

from __future__ import annotations

import ast
from pathlib import Path

import jaxprune

ROOT = Path(jaxprune.__file__).parent
CLI_ONLY = ("argparse", "gin")


def _unit(module: str) -> str:
    """``jaxprune.pruning.prune`` -> ``pruning``; ``jaxprune.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".")[: -node.level] if node.level else []
                found.add(".".join([*base, node.module or ""]).rstrip("."))
            elif node.module == "jaxprune":  # from jaxprune import sharding
                found |= {f"jaxprune.{a.name}" for a in node.names}
            elif node.module:
                found.add(node.module)
    return found


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, tree in _modules().items():
        src = _unit(name)
        deps = graph.setdefault(src, set())
        for mod in _imports(name, tree):
            if mod.startswith("jaxprune.") and _unit(mod) not in ("", src):
                deps.add(_unit(mod))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (found := visit(v)):
                return found
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_only_the_cli_parses_arguments_or_gin():
    offenders = []
    for name, tree in _modules().items():
        if name == "jaxprune.cli" or name.startswith("jaxprune.cli."):
            continue
        for mod in _imports(name, tree):
            if mod.split(".")[0] in CLI_ONLY:
                offenders.append(f"{name} imports {mod}")
    assert not offenders, offenders


def test_packages_import_each_other_without_cycles():
    assert _cycle(unit_graph()) is None, " -> ".join(_cycle(unit_graph()))


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_nothing_but_the_cli_imports_the_cli():
    users = {u for u, deps in unit_graph().items() if "cli" in deps and u not in ("cli", "")}
    assert users <= {"__main__"}, users
