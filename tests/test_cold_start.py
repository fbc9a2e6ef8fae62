"""A plain search's cold start loads only what a plain search needs (issue 18).

The target: a fresh process that imports aqido and runs one search costs at
most 50 ms more than the same script with bare aiohttp (``benchmarks/cpu.py``,
``cold_start``).  Most of that budget went to importing modules a plain
search never uses; they are imported where their feature starts now:

- the planner (:mod:`aqido.plan`, :mod:`aqido.matching`) and
  :mod:`aqido.profile`: with a ``profile=`` only;
- the crawl machinery (:mod:`aqido.crawl`, checkpoints, progress, stats):
  by the first ``crawl()``;
- paging (:mod:`aqido._paging`, and the trusted child queries it derives,
  :mod:`aqido._trusted`): by the first ``iter_search`` or crawl;
- query splitting (:mod:`aqido.partition`): by the first crawl or planned
  search; a search checks its answer with :mod:`aqido._caps` alone;
- :mod:`aqido.adaptive` and its limiter, :mod:`aqido.concurrency`: with
  ``max_concurrency="auto"`` only; and :mod:`statistics` not at all;
- anyio and the task groups of :mod:`aqido._tasks`: by the first crawl,
  ``search_many`` or planned search, or the blocking client (a plain search
  times out with :func:`asyncio.timeout`, sleeps and locks with asyncio);
- the data dictionary (pydicom's table, ~9 ms): by the first query with
  ``filters`` or the first look-up of a keyword;
- cattrs (~17 ms) and the converter of the results (:mod:`aqido._converter`):
  a search structures its results, and reads their values, with the default
  converter's hooks (:mod:`aqido._hooks`, :mod:`aqido._structure`), which are
  those the converter is built with on first use (``Dataset.from_json``,
  ``attrs.evolve`` of a model, ``make_converter``, a type they do not know);
- :mod:`aqido._tree` (``build_tree``): by ``find_studies`` or its first use;
- orjson (~2 ms with the ``dataclasses`` it imports): by the first body the one-pass
  decoding (:func:`aqido._elements.fast_stored`) does not take;
- the attrs classes a plain search never builds an instance of (building each
  one, its methods compiled, took about 1 ms): ``QidoWarning`` and the
  ``Warning`` parser (:mod:`aqido._warning_headers`) by the first ``Warning``
  header, ``Element`` (:mod:`aqido._element`) by ``Dataset.element``,
  ``InvalidValue`` (:mod:`aqido._invalid`) by the first ``.invalid``; ``Caps``
  is a plain class, and ``Retry``, ``Timeout``, ``PersonName`` and the models
  share their ``__repr__``/``__eq__``/``__hash__`` (:mod:`aqido._attrs_methods`,
  :class:`aqido._models._Model`) instead of having attrs compile them;
- the modules' regular expressions (:func:`aqido._lazy.lazy_pattern`, ~3 ms
  to compile them all): by their first use; a plain search compiles one
  (the control-character check of a query value).

Pinned by what a fresh interpreter has loaded (and compiled) after one search,
not by timing.
"""

from __future__ import annotations

import ast
import dis
import importlib
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from aqido._lazy import lazy_pattern

#: Modules a plain search must not import.
NOT_LOADED = (
    "anyio",
    "aqido._element",
    "aqido._invalid",
    "aqido._paging",
    "aqido._tasks",
    "aqido._tree",
    "aqido._trusted",
    "aqido._warning_headers",
    "aqido._converter",
    "aqido.adaptive",
    "aqido.checkpoint",
    "aqido.concurrency",
    "aqido.crawl",
    "aqido.matching",
    "aqido.partition",
    "aqido.plan",
    "aqido.profile",
    "aqido.progress",
    "aqido.stats",
    "cattrs",
    "orjson",  # the general decoding path's (fast_stored decodes a plain search's answer)
    "pydicom",
    "statistics",
)

SCRIPT = r"""
import asyncio, json, sys

STUDY = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00080020": {"vr": "DA", "Value": ["20240131"]},
}


async def serve(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    body = json.dumps([STUDY]).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from aqido import AsyncQidoRS, HierarchicalQuery

    async with AsyncQidoRS(f"http://127.0.0.1:{port}") as client:
        studies = await client.search(HierarchicalQuery(limit=10))
    assert studies[0].StudyInstanceUID == "1.2.3", studies
    assert str(studies[0].StudyDate) == "2024-01-31", studies
    assert studies[0].ModalitiesInStudy == (), studies
    server.close()


asyncio.run(main())
import re
import aqido._structure
import aqido.dictionary

print(json.dumps({
    "loaded": sorted(m for m in sys.argv[1:] if m in sys.modules),
    "dictionary_loaded": aqido.dictionary._tables.cache_info().currsize > 0,
    "converter_built": aqido._structure._DEFAULT_CONTEXT._converter is not None,
    "compiled": sorted(
        f"{name}.{key}"
        for name, module in list(sys.modules.items())
        if name.startswith("aqido")
        for key, value in vars(module).items()
        if isinstance(value, re.Pattern)
    ),
}))
"""


def _after_one_search() -> dict[str, object]:
    import json

    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *NOT_LOADED],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_plain_search_loads_no_planner_crawl_adaptive_or_dictionary() -> None:
    assert _after_one_search() == {
        "loaded": [],
        "dictionary_loaded": False,
        "converter_built": False,
        "compiled": ["aqido._query_values._CONTROL"],
    }


def test_a_lazy_pattern_compiles_on_first_use_then_is_the_compiled_pattern() -> None:
    namespace: dict[str, object] = {}
    namespace["_P"] = lazy_pattern(namespace, "_P", r"a+", re.IGNORECASE)
    assert not isinstance(namespace["_P"], re.Pattern)
    assert lazy_pattern(namespace, "_Q", r"b").pattern == "b"
    assert namespace["_P"].fullmatch("aA") is not None  # type: ignore[attr-defined]
    assert namespace["_P"] == re.compile(r"a+", re.IGNORECASE)


def test_every_lazy_pattern_is_bound_to_the_global_it_names() -> None:
    """``X = lazy_pattern(globals(), "X", ...)``: another name would stay a slow stand-in."""
    calls = 0
    for path in sorted(Path(__file__).resolve().parent.parent.joinpath("aqido").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Assign | ast.AnnAssign):
                continue
            value = node.value
            if not (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "lazy_pattern"
            ):
                continue
            calls += 1
            where = f"{path.name}:{node.lineno}"
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            named = value.args[1]
            assert isinstance(named, ast.Constant), where
            assert [ast.unparse(t) for t in targets] == [named.value], where
    assert calls >= 15


def test_the_default_hooks_are_the_ones_the_default_converter_is_built_with() -> None:
    """A search reads values with ``DEFAULT_HOOKS.resolve``: the converter's hook for each type."""
    import datetime
    import typing

    from aqido._dataset import Dataset, _ValuesOf
    from aqido._hooks import SCALAR_TYPES
    from aqido._models import _MODELS
    from aqido._structure import _DEFAULT_CONTEXT, DEFAULT_HOOKS

    converter = _DEFAULT_CONTEXT.converter  # built now, if no other test did
    assert converter.context is _DEFAULT_CONTEXT
    types: list[object] = [_ValuesOf, tuple[Dataset, ...], tuple[str, ...], tuple[int, ...]]
    types += [t for scalar in SCALAR_TYPES for t in (scalar, scalar | None)]
    types += [typing.Optional[datetime.date], typing.Union[str, int, None]]  # noqa: UP007, UP045
    types += [type_ for model in _MODELS.values() for _name, _key, type_, _ in model._typed]
    for type_ in types:
        known = DEFAULT_HOOKS.resolve(type_)
        assert known is not None, type_
        built = converter.get_structure_hook(type_)
        if type_ == tuple[int, ...]:  # a hook made for that type, by each of them
            assert known.__code__ is built.__code__, type_
        else:
            assert known is built, type_
        assert known in _DEFAULT_CONTEXT.native, type_
    for model in (Dataset, *_MODELS.values()):
        assert converter.get_structure_hook(model) is DEFAULT_HOOKS.model
    assert DEFAULT_HOOKS.resolve(bool) is None  # a subclass: the converter's dispatch decides
    assert _DEFAULT_CONTEXT.hook(bool) is converter.get_structure_hook(int)


def test_the_names_imported_on_first_use_are_listed_and_resolve() -> None:
    script = (
        "import json, sys, aqido.protocol, aqido.results, aqido.values\n"
        "names = {'aqido.protocol': ['QidoWarning', 'parse_warnings'],\n"
        "         'aqido.results': ['Element'], 'aqido.values': ['InvalidValue']}\n"
        "listed = {m: [n for n in ns if n in dir(sys.modules[m])] for m, ns in names.items()}\n"
        "loaded = [m for m in ('aqido._warning_headers', 'aqido._element', 'aqido._invalid')\n"
        "          if m in sys.modules]\n"
        "homes = {m: [getattr(sys.modules[m], n).__module__ for n in ns]\n"
        "         for m, ns in names.items()}\n"
        "print(json.dumps([listed, loaded, homes]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    import json

    listed, loaded, homes = json.loads(out.stdout)
    assert listed == {
        "aqido.protocol": ["QidoWarning", "parse_warnings"],
        "aqido.results": ["Element"],
        "aqido.values": ["InvalidValue"],
    }
    assert loaded == []  # listing them in dir() imports nothing
    assert homes == {
        "aqido.protocol": ["aqido._warning_headers", "aqido._warning_headers"],
        "aqido.results": ["aqido._element"],
        "aqido.values": ["aqido._invalid"],
    }


WARNING_SCRIPT = r"""
import asyncio, json

WARNING = b'299 archive "The number of results exceeded the maximum supported by the server."'


async def serve(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    body = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nWarning: %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (WARNING, len(body)) + body
    )
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    from aqido import AsyncQidoRS, HierarchicalQuery

    async with AsyncQidoRS(f"http://127.0.0.1:{port}") as client:
        studies = await client.search(HierarchicalQuery(limit=10))
    server.close()
    return [[w.code, w.is_truncation] for w in studies.warnings]


print(json.dumps(asyncio.run(main())))
"""


def test_the_first_response_with_a_warning_header_in_a_fresh_process() -> None:
    # The Warning parser is imported on first use: the first such response of a process
    # must import it (a NameError here once escaped the unit tests, which import it earlier).
    import json

    out = subprocess.run(
        [sys.executable, "-c", WARNING_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[299, True]]


def _global_loads(code: types.CodeType) -> set[str]:
    """The names ``code`` (and every function and class body in it) reads as globals."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_loads(const)
    return names


@pytest.mark.parametrize(
    ("module", "lazy"),
    [
        ("aqido", "_LAZY"),
        ("aqido.protocol", "_WARNINGS"),
        ("aqido.results", "_LAZY"),
        ("aqido.values", None),
    ],
)
def test_no_module_reads_a_name_it_only_exports_lazily(module: str, lazy: str | None) -> None:
    # A lazily exported name is bound in the module only once something reads it from
    # outside; the module's own code must import it where it uses it.
    loaded = importlib.import_module(module)
    names = set(getattr(loaded, lazy)) if lazy else {"InvalidValue"}
    path = loaded.__file__
    assert path is not None
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    inside = set().union(
        *(_global_loads(c) for c in code.co_consts if isinstance(c, types.CodeType))
    )
    assert not names & inside, sorted(names & inside)
