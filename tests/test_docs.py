"""The docs run: every code block of the README and of every docs page, and every example script.

Docs rules (so docs never rot), for ``README.md`` and every ``docs/**/*.md`` page alike:

- ```` ```python ```` blocks run in order, one namespace per ``## `` section of a page (the
  part of a page before its first ``## `` is a section too).  A run of ``# ...`` comment
  lines right after a ``print(...)`` or ``asyncio.run(...)`` line shows what that line
  prints: everything a block prints must be shown, and is compared.
- ```` ```ipython ```` blocks use top-level ``await`` (Jupyter, ``python -m asyncio``):
  they run that way, with ``http://127.0.0.1:8042/dicom-web`` pointing at a running demo
  archive.
- ```` ```console ```` blocks: each ``$ aqido ...`` line runs through the CLI's ``main``
  against the demo archive (same URL substitution), in a scratch directory.  The lines
  after it are its expected output (stdout, then stderr; a line ending in ``…`` matches as
  a prefix; none shown: not compared), and ``# exit N`` its exit status (default 0).
- ```` ```json ```` blocks must parse.  ```` ```bash ```` blocks (installing) are not run,
  nor are plain-text ones (```` ``` ```` or ```` ```text ````: a tree, a file format).
- A block can be skipped only visibly: ``<!-- docs-test: skip REASON -->`` on the line
  before its fence; the reason shows in the test report.
- Fences start at the beginning of a line, with a bare language name (no titles or
  attributes), and are never indented (not inside lists or admonitions), so that no block
  can hide from this harness.  mkdocstrings directives (``::: aqido.Name``) and the
  README include of ``docs/index.md`` are plain lines, not code.

Every ``examples/*.py`` runs as a script (with no URL it starts the demo archive itself,
and again given a running archive's URL); ``examples/top_level_await.py`` runs as notebook
cells, with top-level ``await``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import io
import json
import os
import pathlib
import re
import runpy
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from aqido.cli import main as cli_main
from aqido.testing import FakeArchive, demo_archive

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
#: The URL the docs use for "your archive"; replaced by a running demo archive.
README_URL = "http://127.0.0.1:8042/dicom-web"
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s+(?P<reason>\S.*?)\s*-->\s*$")
#: A fence anywhere on a line (indented, ``~~~``): the harness only reads column-0 ``` fences.
ANY_FENCE = re.compile(r"^\s*(```|~~~)")


def doc_pages() -> list[str]:
    """Every page whose code blocks run: the README, then the docs pages (paths from the root)."""
    pages = sorted(path.relative_to(ROOT).as_posix() for path in DOCS.rglob("*.md"))
    return ["README.md", *pages]


PAGES = doc_pages()


@attrs.frozen
class Block:
    """One fenced code block of a docs page."""

    page: str  # path from the repository root, e.g. "docs/crawling.md"
    section: str
    lang: str  # the fence's whole info string (anything but a bare name is rejected)
    code: str
    line: int  # of the first code line, 1-based
    skip: str | None

    @property
    def where(self) -> str:
        """``page:line``, for messages and test ids."""
        return f"{self.page}:{self.line}"


def page_blocks(page: str, text: str | None = None) -> list[Block]:
    """A page's fenced code blocks, with their section and skip reason."""
    source = (ROOT / page).read_text(encoding="utf-8") if text is None else text
    lines = source.splitlines()
    blocks: list[Block] = []
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(.*)$", line)
        if fence:
            start = index + 1
            end = start
            while end < len(lines) and lines[end].rstrip() != "```":
                end += 1
            previous = next((p for p in reversed(lines[:index]) if p.strip()), "")
            marker = SKIP.match(previous)
            blocks.append(
                Block(
                    page,
                    section,
                    fence.group(1).strip(),
                    "\n".join(lines[start:end]) + "\n",
                    start + 1,
                    marker.group("reason") if marker else None,
                )
            )
            index = end
        index += 1
    return blocks


def all_blocks(lang: str) -> list[Block]:
    """Every block of one language, on every page."""
    return [b for page in PAGES for b in page_blocks(page) if b.lang == lang]


def shown_output(code: str) -> list[str]:
    """The output a block shows: ``# `` comment runs after print(...) / asyncio.run(...) lines."""
    lines = code.splitlines()
    shown: list[str] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#") or not re.search(r"\b(print|asyncio\.run)\(", line):
            continue
        following = number + 1
        while following < len(lines) and lines[following].startswith("# "):
            shown.append(lines[following][2:])
            following += 1
    return shown


def _sections(lang: str) -> list[tuple[str, str]]:
    """``(page, section)`` pairs that hold blocks of ``lang``, in page order."""
    return list(dict.fromkeys((b.page, b.section) for b in all_blocks(lang)))


@pytest.fixture(scope="module")
def archive() -> Iterator[FakeArchive]:
    """The demo archive the docs' commands and notebook cells talk to."""
    with demo_archive(50).run_in_thread() as running:
        yield running


def _skip_if_marked(block: Block) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")


# --- the harness itself ----------------------------------------------------------------------


def test_blocks_sections_skips_and_shown_output_are_parsed() -> None:
    text = (
        "# Page\n\n```python\nx = 1\n```\n\n## A\n\n```python\nprint(1)\n# 1\nx = 2\n```\n\n## B\n"
        "<!-- docs-test: skip needs a PACS -->\n```console\n$ aqido x\n```\n\n"
        "::: aqido.Study\n\n"
        '{%\n   include-markdown "../README.md"\n   start="<!-- begin-teaser -->"\n%}\n\n'
        '```python title="x.py"\npass\n```\n'
    )
    zero, first, second, titled = page_blocks("docs/x.md", text)
    assert (zero.page, zero.section, zero.line) == ("docs/x.md", "", 4)
    assert (first.section, first.lang, first.line, first.skip) == ("A", "python", 10, None)
    assert shown_output(first.code) == ["1"]
    assert (second.section, second.lang, second.skip) == ("B", "console", "needs a PACS")
    assert titled.lang == 'python title="x.py"'  # rejected by the language check below
    assert shown_output("for i in x:\n    print(i)  # each\nprint(2)\n# 2\n# 3\n") == ["2", "3"]


def test_the_pages_are_the_readme_and_every_docs_page() -> None:
    assert PAGES[0] == "README.md"
    assert "docs/index.md" in PAGES
    assert "docs/crawling.md" in PAGES
    assert len(PAGES) == 1 + len(list(DOCS.rglob("*.md")))


def test_the_readme_is_short_and_has_the_issue_outline() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    for wanted in ("Install", "Set-up", "A 30-second tour", "Documentation"):
        assert any(h.startswith(wanted) for h in headings), wanted
    assert headings.index("Install") < headings.index("Set-up") < headings.index("A 30-second tour")


def test_the_readme_links_resolve_and_reach_the_guides() -> None:
    text = README.read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text)]
    local = [t for t in targets if t and "://" not in t]
    for target in local:
        assert (ROOT / target).exists(), target
    for guide in ("queries", "results", "client", "crawling", "cli", "notebooks", "errors"):
        assert f"docs/{guide}.md" in local, guide
    for guide in ("testing", "migrating", "servers", "performance", "architecture"):
        assert f"docs/{guide}.md" in local, guide


def test_the_setup_commands_are_the_two_that_work() -> None:
    [setup] = [b for b in page_blocks("README.md") if b.section == "Set-up"]
    first, second = (line.split("#")[0].strip() for line in setup.code.splitlines())
    assert first == "pip install -e '.[cli]' && aqido demo"
    assert second == "pip install nox && nox"
    assert 'aqido = "aqido.cli:main"' in (ROOT / "pyproject.toml").read_text()
    assert 'cli = ["rich' in (ROOT / "pyproject.toml").read_text()


def test_the_results_page_keeps_its_benchmark() -> None:
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    assert "python benchmarks/parse.py" in text
    assert "pydicom Dataset.from_json" in text


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_checked_or_visibly_skipped(page: str) -> None:
    blocks = page_blocks(page)
    # "" and "text" are plain text (a tree, a file format): not code, nothing to run
    langs = {b.lang for b in blocks}
    assert langs <= {"python", "ipython", "console", "json", "bash", "text", ""}, (page, langs)
    # every fence is one the harness reads: at column 0, with backticks
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    fences = [n for n, line in enumerate(lines, 1) if ANY_FENCE.match(line)]
    assert len(fences) == 2 * len(blocks), f"{page}: an indented or ~~~ fence at {fences}"
    assert all(lines[n - 1].startswith("```") for n in fences), f"{page}: fences {fences}"


# --- docs pages: python, ipython, console, json ------------------------------------------


@pytest.mark.parametrize(
    ("page", "section"), _sections("python"), ids=lambda v: v.replace(" ", "_") or "top"
)
def test_python_blocks_run(page: str, section: str) -> None:
    threads_before = set(threading.enumerate())
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in [b for b in all_blocks("python") if (b.page, b.section) == (page, section)]:
        _skip_if_marked(block)
        out = io.StringIO()
        code = compile("\n" * (block.line - 1) + block.code, str(ROOT / page), "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
        assert out.getvalue().splitlines() == shown_output(block.code), block.where
        # nothing left running (the blocking client's loop thread, an archive thread...)
        assert set(threading.enumerate()) <= threads_before, block.where


async def _run_top_level(code: Any, namespace: dict[str, Any]) -> None:
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        await result


def run_cells(source: str, filename: str, namespace: dict[str, Any]) -> None:
    """Run code that uses top-level ``await``, as Jupyter and ``python -m asyncio`` do."""
    code = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    asyncio.run(_run_top_level(code, namespace))


@pytest.mark.parametrize("block", all_blocks("ipython"), ids=lambda b: b.where)
def test_ipython_blocks_run(block: Block, archive: FakeArchive) -> None:
    _skip_if_marked(block)
    assert README_URL in block.code, block.where
    source = "\n" * (block.line - 1) + block.code.replace(README_URL, archive.url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_cells(source, str(ROOT / block.page), {"__name__": "__docs__"})
    assert out.getvalue().splitlines() == shown_output(block.code), block.where


def _commands(code: str) -> list[tuple[str, list[str], int]]:
    """``(command, expected output lines, expected exit status)`` for each ``$ `` line."""
    found: list[tuple[str, list[str], int]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], [], 0))
        elif found and (status := re.fullmatch(r"# exit (\d+)", line.strip())):
            command, expected, _ = found[-1]
            found[-1] = (command, expected, int(status.group(1)))
        elif found and line.strip():
            found[-1][1].append(line)
    return found


def _matches(actual: list[str], expected: list[str]) -> bool:
    if len(actual) != len(expected):
        return False
    return all(
        a.startswith(e[:-1]) if e.endswith("…") else a == e
        for a, e in zip(actual, expected, strict=True)
    )


@pytest.mark.parametrize("block", all_blocks("console"), ids=lambda b: b.where)
def test_console_commands_run(
    block: Block, archive: FakeArchive, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_if_marked(block)
    monkeypatch.chdir(tmp_path)
    commands = _commands(block.code)
    assert commands, f"{block.where}: a console block without `$ ` commands"
    for command, expected, status in commands:
        argv = shlex.split(command.replace(README_URL, archive.url))
        assert argv[0] == "aqido", f"{block.where}: only aqido commands run: {command}"
        out, err = io.StringIO(), io.StringIO()
        got = cli_main(argv[1:], stdout=out, stderr=err, environ={})
        printed = out.getvalue().splitlines() + err.getvalue().splitlines()
        assert got == status, f"{block.where}: {command}\n{out.getvalue()}{err.getvalue()}"
        if expected:
            assert _matches(printed, expected), (block.where, command, printed, expected)


def test_json_blocks_parse() -> None:
    for block in [b for b in all_blocks("json") if b.skip is None]:
        json.loads(block.code)


# --- examples ------------------------------------------------------------------------------

SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "top_level_await.py")
#: Something an example prints when it worked (every example must also exit 0).
EXPECTED = {
    "aiohttp_service.py": "-> 200,",
    "crawl_to_jsonl.py": "studies.jsonl: ",
    "from_dicomtrolley.py": "aqido crawl:        the same studies",
    "search_by_patient_and_date.py": "studies of 'D*'",
    "series_per_study.py": "series searches in",
}


def test_every_example_is_listed_in_the_docs() -> None:
    text = (DOCS / "notebooks.md").read_text(encoding="utf-8")
    for path in EXAMPLES.iterdir():
        if path.suffix in (".py", ".ipynb"):
            assert path.name in text, path.name


def _run_example(name: str, cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AQIDO_URL"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_on_its_own(name: str, tmp_path: pathlib.Path) -> None:
    result = _run_example(name, tmp_path)
    assert result.returncode == 0, result.stderr
    assert EXPECTED.get(name, "") in result.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_against_a_given_archive(
    name: str,
    archive: FakeArchive,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The URL argument is used (in-process, as ``python examples/NAME URL`` would run)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AQIDO_URL", raising=False)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), archive.url])
    before = len(archive.requests)
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert EXPECTED.get(name, "") in capsys.readouterr().out
    assert len(archive.requests) > before  # it used the archive it was given


def test_top_level_await_example_runs_as_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AQIDO_URL", raising=False)
    path = EXAMPLES / "top_level_await.py"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_cells(path.read_text(encoding="utf-8"), str(path), {"__name__": "__notebook__"})
    assert re.search(r"^\d+ studies; the first:$", out.getvalue(), flags=re.MULTILINE)
    assert re.search(r"^\d+ instances in \d+ studies$", out.getvalue(), flags=re.MULTILINE)
    cells = path.read_text().count("# %%")
    assert cells >= 4


def test_from_dicomtrolley_runs_without_dicomtrolley(tmp_path: pathlib.Path) -> None:
    code = (
        "import runpy, sys\n"
        "sys.modules['dicomtrolley'] = None\n"
        "sys.modules['dicomtrolley.core'] = None\n"
        f"runpy.run_path({str(EXAMPLES / 'from_dicomtrolley.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "dicomtrolley is not installed" in result.stdout
    assert "aqido crawl:        the same studies" in result.stdout


# --- the docs site ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "page"), [("aqido", "aqido.md"), ("aqido.testing", "testing.md")]
)
def test_the_api_reference_documents_every_public_name(module: str, page: str) -> None:
    """Each name of the module's ``__all__`` has its mkdocstrings directive, and no other."""
    exported = set(importlib.import_module(module).__all__) - {"__version__"}
    text = (DOCS / "reference" / page).read_text(encoding="utf-8")
    documented = re.findall(rf"^::: {re.escape(module)}\.(\w+)\s*$", text, flags=re.MULTILINE)
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert set(documented) == exported


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    # "- Title: page.md" or "- page.md"
    listed = set(re.findall(r"^\s*-\s*(?:.*:\s*)?(\S+\.md)\s*$", nav, flags=re.MULTILINE))
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert listed <= pages, listed - pages
    assert pages <= listed, f"add to the nav of mkdocs.yml: {sorted(pages - listed)}"


def test_the_site_hook_turns_sphinx_roles_into_code() -> None:
    import mkdocs_hooks

    html = (
        "<p>A :class:<code>~aqido.retry.Timeout</code>, :meth:<code>AsyncQidoRS.close</code>"
        " and :mod:<code>aqido.query</code>; <code>:class:</code> stays.</p>"
    )
    assert mkdocs_hooks.on_page_content(html) == (
        "<p>A <code>Timeout</code>, <code>AsyncQidoRS.close</code>"
        " and <code>aqido.query</code>; <code>:class:</code> stays.</p>"
    )


def test_the_errors_page_shows_every_exception() -> None:
    import aqido.errors

    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    tree = text.split("```\nQidoError", 1)[1].split("```", 1)[0]
    exceptions = [
        name
        for name in aqido.errors.__all__
        if isinstance(getattr(aqido.errors, name), type)
        and issubclass(getattr(aqido.errors, name), aqido.errors.QidoError)
    ]
    assert "QidoError" in exceptions
    for name in exceptions:
        assert name == "QidoError" or re.search(rf"── {name}\b", tree), name


#: What a receiver of the docs' inline code stands for (``archive.fail(...)``).
RECEIVERS = {"archive": "aqido.testing.FakeArchive", "client": "aqido.AsyncQidoRS"}
#: A call in inline code with keyword arguments, ``*`` or ``**``: ``f(match, *, times=None)``.
INLINE_CALL = re.compile(r"`([A-Za-z_][\w.]*)\(([^`()]*(?:=|\*)[^`()]*)\)`")


def _documented_callable(name: str) -> Any:
    """The object a dotted name of the docs' inline code stands for, or ``None``."""
    import aqido.testing

    head, _, rest = name.partition(".")
    parts = (f"{RECEIVERS[head]}.{rest}" if head in RECEIVERS and rest else name).split(".")
    if parts[0] != "aqido":
        parts = ["aqido.testing" if hasattr(aqido.testing, parts[0]) else "aqido", *parts]
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute, None)
        return obj
    return None


def test_calls_and_signatures_shown_inline_match_the_code() -> None:
    """Inline ``f(a, b=1)``: every keyword is one ``f`` takes; a signature is the code's.

    A signature (it shows ``*``, ``**`` or a ``=None`` default, as
    ``archive.fail(match, fault="500", *, times=None)``) also has the code's
    positional parameters, in order, and its literal defaults.
    """
    import inspect

    checked = []
    for page in PAGES:
        for found in INLINE_CALL.finditer((ROOT / page).read_text(encoding="utf-8")):
            name, shown = found.groups()
            target = _documented_callable(name)
            if target is None or not callable(target):
                continue  # a fixture, another library's function...
            params = dict(inspect.signature(target).parameters)
            params.pop("self", None)
            takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
            where = f"{page}: `{name}({shown})`"
            try:
                args = ast.parse(f"def f({shown}): pass").body[0].args  # type: ignore[attr-defined]
            except SyntaxError:  # a call with values, f("x", limit=5): its keywords only
                try:
                    call = ast.parse(f"f({shown})", mode="eval").body
                except SyntaxError:
                    continue  # not Python (a shell line)
                named = [k.arg for k in call.keywords if k.arg is not None]  # type: ignore[attr-defined]
                args = None
            else:
                given = args.posonlyargs + args.args
                named = [
                    a.arg for a in [*given[len(given) - len(args.defaults) :], *args.kwonlyargs]
                ]
            for keyword in named:
                accepts = keyword in params and params[keyword].kind in (
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    inspect.Parameter.KEYWORD_ONLY,
                )
                assert accepts or takes_any, f"{where}: no argument {keyword!r}"
            checked.append(name)
            if args is None or ("*" not in shown and "=None" not in shown):
                continue  # a call, not a signature
            positional = [a.arg for a in given[: len(given) - len(args.defaults)]]
            code = [p.name for p in params.values() if p.kind is not p.KEYWORD_ONLY]
            assert positional == code[: len(positional)], where
            defaults = zip(reversed(given), reversed(args.defaults), strict=False)
            keyword_defaults = zip(args.kwonlyargs, args.kw_defaults, strict=True)
            for arg, default in [*defaults, *keyword_defaults]:
                if isinstance(default, ast.Constant):
                    assert params[arg.arg].default == default.value, f"{where}: {arg.arg}"
    assert {"archive.fail", "ServerProfile.orthanc", "Timeout", "Retry"} <= set(checked)
