"""The package's import graph: arrows point down the layers of DESIGN.md, and no module
imports itself back through another (not even lazily, inside a function). Imports made only
for type checkers (``if TYPE_CHECKING:``) are left out: they never run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import consortium

PACKAGE = Path(consortium.__file__).parent
# DESIGN.md, "Suggested layout": cli -> scenarios/integrations -> orchestration, audit ->
# protocol -> fl, store, ledger -> chain -> crypto. The package's top-level modules (errors,
# files, JSON reading, locks...) sit below them all.
LAYERS = {
    "cli": 6,
    "scenarios": 5,
    "integrations": 5,
    "orchestration": 4,
    "audit": 4,
    "protocol": 3,
    "fl": 2,
    "store": 2,
    "ledger": 2,
    "chain": 1,
    "crypto": 0,
}
BASE = -1


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _run_time_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and everything under it, except the bodies of ``if TYPE_CHECKING:``."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for branch in child.orelse for n in _run_time_nodes(branch))
        else:
            yield from _run_time_nodes(child)


def _imports(path: Path) -> Iterator[str]:
    """Every consortium module ``path`` imports when it runs, at module level or inside a
    function."""
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in _run_time_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] == "consortium")


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {imported for imported in _imports(path) if imported in modules and imported != name}
        for name, path in modules.items()
    }


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], BASE) if len(parts) > 1 else BASE


def test_imports_point_down_the_layers() -> None:
    upward = sorted(
        f"{module} ({_layer(module)}) imports {imported} ({_layer(imported)})"
        for module, imports in _graph().items()
        for imported in imports
        if _layer(imported) > _layer(module)
    )
    assert upward == []


def test_no_module_imports_itself_back() -> None:
    graph = _graph()
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
