"""The layers as a contract: import-linter checks pyproject's [tool.importlinter] contracts.

cli.py -> app.py -> assistant/ -> tools/ -> sleeplm/; inside sleeplm report over measure, model
and synthetic, over io, over terms and errors; model and measure never import each other; no
import cycle between sibling modules. A broken contract fails the suite (proved once below).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sleeplm", "tools", "assistant", "prompts")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the tree at `root` (its pyproject.toml), in a fresh interpreter."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_app_does_not_import_the_command_line():
    """grimp takes packages only, so the step between the two top modules is checked here."""
    assert "cli" not in _imported_names(ROOT / "app.py")


def test_old_import_paths_never_point_upward():
    """The alias table of moved modules (sleeplm/__init__.py) resolves only to modules inside sleeplm:
    an alias to the top floor (the old `sleeplm.cli`) would be an upward import import-linter cannot see."""
    import importlib.util

    import sleeplm

    assert all(new.startswith("sleeplm.") for new in sleeplm._MOVED_MODULES.values())  # noqa: SLF001
    assert importlib.util.find_spec("sleeplm.cli") is None


def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.gz", "*.json"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path).returncode == 0  # the copy alone is clean

    measure = tmp_path / "sleeplm" / "measure" / "staging.py"
    measure.write_text(measure.read_text() + "\nfrom sleeplm.model import network  # planted: measure -> model\n")
    terms = tmp_path / "sleeplm" / "terms.py"
    terms.write_text(terms.read_text() + "\nimport tools  # planted: the bottom floor reaches up\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "sleeplm.measure.staging -> sleeplm.model.network" in result.stdout
    assert "sleeplm.terms -> tools" in result.stdout
