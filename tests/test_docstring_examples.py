"""Every public function in `sleeplm/`, and every public method of its public classes, carries an
``Examples`` section whose ``>>>`` lines run.

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


def public_methods(module) -> list[str]:
    """``Class.method`` for the methods (plain, class and static; not properties, which are attributes)
    that the module's public classes define themselves under a name without a leading underscore."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    found = []
    for name in names:
        cls = getattr(module, name, None)
        if not inspect.isclass(cls) or cls.__module__ != module.__name__:
            continue
        found += [f"{name}.{attr}" for attr, value in vars(cls).items()
                  if not attr.startswith("_") and inspect.isfunction(_function(value))]
    return found


def _function(value):
    return value.__func__ if isinstance(value, (classmethod, staticmethod)) else value


def _has_example(func, name: str, module) -> bool:
    doc = inspect.getdoc(func) or ""
    tests = doctest.DocTestFinder(recurse=False).find(func, name, module=module)
    return bool(re.search(r"^Examples\n-{8}$", doc, flags=re.M)) and any(t.examples for t in tests)


def _missing_examples(module) -> list[str]:
    missing = [name for name in public_functions(module) if not _has_example(getattr(module, name), name, module)]
    for name in public_methods(module):
        owner, attr = name.split(".")
        if not _has_example(_function(vars(getattr(module, owner))[attr]), name, module):
            missing.append(name)
    return missing


@pytest.mark.parametrize("name", _modules())
def test_public_function_has_an_example(name):
    module = importlib.import_module(name)
    missing = _missing_examples(module)
    assert not missing, f"{name}: public functions or methods without a runnable Examples section: {missing}"


def test_no_example_is_skipped():
    skipped = [str(p.relative_to(ROOT)) for p in (ROOT / "sleeplm").rglob("*.py") if "+SKIP" in p.read_text()]
    assert not skipped, f"doctests marked +SKIP in {skipped}"


def test_pytest_collects_the_library_doctests():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert "sleeplm" in options["testpaths"]


def test_the_check_finds_a_function_or_method_without_an_example():
    import types

    module = types.ModuleType("fake_module")
    exec("def documented():\n    '''Say one.\n\n    Examples\n    --------\n    >>> documented()\n    1\n    '''\n"
         "    return 1\n\ndef bare():\n    '''No example.'''\n\n"
         "class Tool:\n    def run(self):\n        '''No example.'''\n\n    @classmethod\n    def make(cls):\n"
         "        '''Make one.\n\n        Examples\n        --------\n        >>> 1 + 1\n        2\n        '''\n\n"
         "    @property\n    def size(self):\n        '''An attribute: no example needed.'''\n\n"
         "    def _private(self):\n        pass\n", module.__dict__)
    module.Tool.__module__ = module.__name__  # as if the class were defined in the module's file
    assert _missing_examples(module) == ["bare", "Tool.run"]
