"""The shape of the package: an acyclic import graph, and no module over 600 lines without a reason.

The graph is read from the source (``ast``), not from a running interpreter: an
edge ``a -> b`` is any ``import`` of module ``b`` in module ``a``, at the top or
inside a function (a lazy import is still a dependency), except under
``if TYPE_CHECKING:`` (annotations only).  ``from aqido import dictionary`` is an
edge to ``aqido.dictionary``; ``from aqido import __version__`` one to ``aqido``.

Each allow-list below names the known offenders, so the tests pass now and fail
for a new one; an entry that is no longer an offender fails too (delete it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aqido"

#: The most lines a module has unless its docstring says why ("one module because").
MAX_LINES = 600

#: Modules over MAX_LINES without a reason, to be split (issue 14).  Do not add to this list.
LONG_MODULES_ALLOWED = {
    "aqido.crawl",  # the crawl: the integrator splits it
}

#: Import edges that close a cycle, to be removed (issue 14).  Do not add to this list.
#: (Empty now: the last one, aqido._cli_parquet -> aqido.cli, went with the CLI's split.)
CYCLE_EDGES_ALLOWED: set[tuple[str, str]] = set()


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__.py``)."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imported(node: ast.AST, name: str, is_package: bool, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ``modules`` that one import statement in module ``name`` imports."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def _statements(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node under ``body``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse)
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _statements([child])
            elif isinstance(child, ast.excepthandler | ast.match_case):
                yield from _statements(child.body)


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see the module docstring)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in _statements(tree.body):
            edges |= _imported(node, name, path.name == "__init__.py", modules)
        graph[name] = edges
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_reader_sees_lazy_imports_and_skips_type_checking() -> None:
    graph = import_graph(module_files())
    assert "aqido.protocol" in graph["aqido.client"]  # a top-level import
    assert "aqido._probe_checks" in graph["aqido.probe"]
    assert "aqido.probe" in graph["aqido.client"]  # imported inside AsyncQidoRS.probe
    assert "aqido.client" not in graph["aqido.probe"]  # only under TYPE_CHECKING
    assert "aqido.dictionary" in graph["aqido.matching"]  # from aqido import dictionary


def test_find_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_import_graph_is_acyclic() -> None:
    graph = import_graph(module_files())
    for source, target in CYCLE_EDGES_ALLOWED:
        assert target in graph.get(source, ()), f"{source} -> {target} is gone: drop it"
        graph[source].discard(target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def _long_without_reason(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(text)) or ""
    return len(text.splitlines()) > MAX_LINES and "one module because" not in docstring.lower()


def test_no_module_is_over_600_lines_without_a_reason() -> None:
    long = {name for name, path in module_files().items() if _long_without_reason(path)}
    assert long - LONG_MODULES_ALLOWED == set(), (
        f"over {MAX_LINES} lines: split them, or say in the module docstring why it stays "
        "'one module because ...'"
    )
    assert LONG_MODULES_ALLOWED - long == set(), "no longer too long: drop them from the list"
