"""requirements.lock: the hashed lock that `make test`/`make run` install agrees with pyproject and constraints."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", block)
        if match:
            pins[_norm(match.group(1))] = (match.group(2), block.count("--hash=sha256:"))
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_locked_package_is_pinned_with_hashes():
    locked = _locked()
    assert len(locked) > 100  # the whole tree, not only the direct dependencies
    assert all(n_hashes >= 1 for _, n_hashes in locked.values()), [n for n, (_, h) in locked.items() if h == 0]


def test_lock_covers_pyproject_and_matches_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    locked = _locked()
    for requirement in wanted:
        name = _norm(re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0))
        assert name in locked, f"{name} is in pyproject.toml but not in requirements.lock: run `make lock`"
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            locked_version = locked[_norm(name)][0]
            # the lock may carry the local build tag (torch 2.13.0+cpu)
            assert locked_version.split("+")[0] == version.strip(), (name, version, locked_version)
