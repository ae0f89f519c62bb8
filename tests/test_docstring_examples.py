"""Every public function in `sleeplm/` carries an ``Examples`` section whose ``>>>`` lines run.

The examples themselves run as doctests (pyproject.toml: ``--doctest-modules`` over `sleeplm`);
this test makes sure none is missing, skipped or left out of the collection.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import sleeplm

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sleeplm.__path__, "sleeplm."))


def public_functions(module) -> list[str]:
    """Functions the module defines and offers: its ``__all__``, else every name without a leading underscore."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return [n for n in names if inspect.isfunction(getattr(module, n, None))
            and getattr(module, n).__module__ == module.__name__]


def _missing_examples(module) -> list[str]:
    missing = []
    for name in public_functions(module):
        func = getattr(module, name)
        doc = inspect.getdoc(func) or ""
        tests = doctest.DocTestFinder(recurse=False).find(func, name, module=module)
        if not re.search(r"^Examples\n-{8}$", doc, flags=re.M) or not any(t.examples for t in tests):
            missing.append(name)
    return missing


@pytest.mark.parametrize("name", _modules())
def test_public_function_has_an_example(name):
    module = importlib.import_module(name)
    missing = _missing_examples(module)
    assert not missing, f"{name}: public functions without a runnable Examples section: {missing}"


def test_no_example_is_skipped():
    skipped = [str(p.relative_to(ROOT)) for p in (ROOT / "sleeplm").rglob("*.py") if "+SKIP" in p.read_text()]
    assert not skipped, f"doctests marked +SKIP in {skipped}"


def test_pytest_collects_the_library_doctests():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert "sleeplm" in options["testpaths"]


def test_the_check_finds_a_function_without_an_example():
    import types

    module = types.ModuleType("fake_module")
    exec("def documented():\n    '''Say one.\n\n    Examples\n    --------\n    >>> documented()\n    1\n    '''\n"
         "    return 1\n\ndef bare():\n    '''No example.'''\n", module.__dict__)
    assert _missing_examples(module) == ["bare"]
