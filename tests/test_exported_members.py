"""The public API: ``aqido.__all__`` lists exactly the public names, all importable."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import aqido


def test_all_is_sorted_and_complete() -> None:
    assert aqido.__all__ == sorted(aqido.__all__)
    for name in aqido.__all__:
        assert getattr(aqido, name) is not None, name


def test_lazy_names_are_exported() -> None:
    assert set(aqido._LAZY) <= set(aqido.__all__)


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="does_not_exist"):
        aqido.does_not_exist  # type: ignore[attr-defined]  # noqa: B018


def test_import_aqido_does_not_import_heavy_modules() -> None:
    code = (
        "import sys, aqido; "
        "heavy = [m for m in ('aiohttp', 'pydicom', 'pandas', 'rich', 'cattrs')"
        " if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- the public API, pinned ---------------------------------------------------------------

PUBLIC_API = pathlib.Path(__file__).with_name("public_api.txt")
MODULES = ("aqido", "aqido.testing")


def _pinned(module: str) -> list[str]:
    """The names of ``module`` in the checked-in list, in file order."""
    names = []
    for line in PUBLIC_API.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and line.rsplit(".", 1)[0] == module:
            names.append(line.rsplit(".", 1)[1])
    return names


@pytest.mark.parametrize("module", MODULES)
def test_the_public_api_is_the_checked_in_list(module: str) -> None:
    exported = importlib.import_module(module).__all__
    pinned = _pinned(module)
    assert pinned, f"{PUBLIC_API.name} lists nothing for {module}"
    assert len(pinned) == len(set(pinned)), "a name is listed twice"
    added = sorted(set(exported) - set(pinned))
    removed = sorted(set(pinned) - set(exported))
    assert (added, removed) == ([], []), (
        f"{module}.__all__ changed (added {added}, removed {removed}): if that is deliberate, "
        f"update tests/{PUBLIC_API.name} and docs/reference/"
    )


@pytest.mark.parametrize("module", MODULES)
def test_no_private_name_is_exported(module: str) -> None:
    """No ``_name`` in ``__all__``, and no private object re-exported under a public name."""
    namespace = importlib.import_module(module)
    for name in namespace.__all__:
        if name == "__version__":
            continue
        assert not name.startswith("_"), f"{module}.{name}"
        value = getattr(namespace, name)
        own_name = getattr(value, "__name__", name)
        assert not own_name.startswith("_"), f"{module}.{name} is {own_name}"


def test_the_checked_in_list_holds_only_the_public_modules() -> None:
    for line in PUBLIC_API.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.rsplit(".", 1)[0] in MODULES, line


# --- the public API as a type checker sees it ----------------------------------------------


def _as_type_checkers_see(module: str) -> dict[str, object]:
    """``module``'s namespace when ``TYPE_CHECKING`` is true, as mypy and pyright read it."""

    class TypeChecking(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id == "TYPE_CHECKING" and isinstance(node.ctx, ast.Load):
                return ast.copy_location(ast.Constant(True), node)
            return node

    path = importlib.import_module(module).__file__
    assert path is not None
    tree = TypeChecking().visit(ast.parse(pathlib.Path(path).read_text(encoding="utf-8")))
    tree = ast.fix_missing_locations(tree)
    namespace: dict[str, object] = {"__name__": f"{module} (type checking)"}
    exec(compile(tree, path, "exec"), namespace)
    return namespace


@pytest.mark.parametrize("module", MODULES)
def test_type_checkers_see_every_public_name_and_no_other(module: str) -> None:
    """Every name of ``__all__`` is imported for type checkers, and no module ``__getattr__``.

    A module ``__getattr__`` tells mypy and pyright that *any* name exists, typed
    ``Any``: ``from aqido import CrawlFailur`` (a typo) would pass type checking and
    fail only when run.
    """
    seen = _as_type_checkers_see(module)
    exported = importlib.import_module(module).__all__
    assert [name for name in exported if name not in seen] == []
    assert "__getattr__" not in seen
