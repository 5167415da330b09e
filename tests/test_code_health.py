"""The shape of the code, checked like behaviour: what a reviewer would otherwise have to catch.

- no import cycle between hookgate's modules, and no import inside a function to hide one;
- every Redis key is spelt in ``hookgate.store`` and nowhere else (Lua scripts included);
- no function in ``app/`` above cyclomatic complexity 15 (radon's measure, which counts boolean
  operators too: stricter than ruff's mccabe).
"""

from __future__ import annotations

import ast
from pathlib import Path

from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
MAX_COMPLEXITY = 15


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(APP).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("hookgate", *parts))] = path
    return found


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    names = [f"{target}.{alias.name}" for alias in node.names]
    return [target, *names]


def import_graph() -> dict[str, set[str]]:
    """Module → the hookgate modules it imports at module level (``TYPE_CHECKING`` blocks excluded)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        edges: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom):
                edges |= {name for name in _resolve(module, path, node) if name in known}
            elif isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in known}
        # importing hookgate.x.y runs the package hookgate.x first: it is an edge too
        edges |= {".".join(edge.split(".")[:n]) for edge in set(edges) for n in range(2, edge.count(".") + 1)}
        edges.discard(module)
        # a module's own packages are already being imported: no cycle through them
        graph[module] = {edge for edge in edges if not module.startswith(edge + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    assert cycles(import_graph()) == []


def test_no_imports_inside_functions():
    """A function-level import is how a cycle hides; every import is at the top of its module."""
    inside = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        inside.append(f"{module}:{inner.lineno}")
    assert inside == []


def test_every_redis_key_is_spelt_in_the_store_module():
    """No string (Python or an embedded Lua script) outside hookgate.store names a ``hookgate:`` key."""
    spelt = []
    for module, path in modules().items():
        if module == "hookgate.store":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            # "hookgate: stopping" is a message to a person, not a key
            if "hookgate:" in text and not text.startswith("hookgate: ") and id(node) not in docstrings:
                spelt.append(f"{module}:{node.lineno}")
    assert spelt == []


def test_lua_scripts_build_no_key_names():
    """Keys reach a script as KEYS, or as a pattern from ``keys.lua_patterns()``: never by concatenation."""
    for module, path in modules().items():
        source = path.read_text()
        if "redis.call" in source:
            for fragment in ("'delivery:'", "'dest:'", "':pending'", "\"delivery:\"", "\"dest:\""):
                assert fragment not in source, f"{module} builds a key in Lua: {fragment}"


def test_no_function_in_app_is_too_complex():
    complex_ = set()
    for module, path in modules().items():
        for block in cc_visit(path.read_text()):
            # radon lists each method twice (in its class and on its own); a class's figure is not a function's
            for item in getattr(block, "methods", None) or [block]:
                if item.complexity > MAX_COMPLEXITY:
                    complex_.add(f"{module}.{item.fullname} ({item.complexity})")
    assert sorted(complex_) == []


def test_the_complexity_measure_sees_a_complex_function():
    branches = "\n".join(f"    if x == {n}:\n        return {n}" for n in range(MAX_COMPLEXITY + 1))
    assert max(b.complexity for b in cc_visit(f"def f(x):\n{branches}\n")) > MAX_COMPLEXITY
