"""The layers hold: no import cycle inside the package, the pure core imports no kernel library,
kinds reach the kernel only through the engine they are handed, and no function outgrows 80
lines. Read from the source (ast), nothing imported."""

import ast
import os
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[2] / "orchestrator"
KERNEL_LIBS = {"pyroute2", "nftables", "bcc", "prometheus_client", "ctypes", "fcntl", "subprocess"}
MAX_LINES = 80


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: pathlib.Path, top_level_only: bool, known: set[str] | None = None) -> set[str]:
    """Modules NAME imports (absolute names); with TOP_LEVEL_ONLY, not those inside functions
    (deferred on purpose: the CLI starts without bcc, the pure kinds without pyroute2)."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # `if TYPE_CHECKING:` imports nothing at run time
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names}
            known = known if known is not None else set(modules())
            if subs & known:  # `from . import x` imports the module x, not (only) the package
                found |= subs & known
            else:
                found.add(mod)
    return found


def graph(top_level_only: bool) -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(m, p, top_level_only, set(mods)) if i in mods and i != m} for m, p in mods.items()}


def test_no_import_cycle_inside_the_package():
    g = graph(top_level_only=True)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def _external(path: pathlib.Path, name: str, top_level_only: bool) -> set[str]:
    return {i.split(".")[0] for i in imports(name, path, top_level_only) if not i.startswith("orchestrator")}


def test_the_pure_core_imports_no_kernel_library():
    for name, path in modules().items():
        if name.startswith("orchestrator.lab"):
            bad = _external(path, name, top_level_only=False) & KERNEL_LIBS
            assert not bad, f"{name} (pure core) imports {bad}"
            assert not [i for i in imports(name, path, False) if i.startswith(("orchestrator.adapters",
                                                                               "orchestrator.reconcile"))], name


def test_kinds_and_the_diff_load_without_kernel_libraries():
    """The diff is pure: kinds get the engine (with its adapters) handed to them at apply time."""
    g = graph(top_level_only=True)
    mods = modules()
    seen, todo = set(), ["orchestrator.reconcile.diff"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        bad = _external(mods[m], m, top_level_only=True) & KERNEL_LIBS
        assert not bad, f"{m}, loaded by the pure diff, imports {bad}"
        todo += g[m]
    assert "orchestrator.reconcile.kinds.links" in seen


def test_no_function_over_80_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{os.path.relpath(path, PKG.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
