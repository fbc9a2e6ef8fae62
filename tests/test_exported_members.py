"""The public API: ``aqido.__all__`` lists exactly the public names, all importable."""

from __future__ import annotations

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
