"""Audit: known vulnerabilities in the locked dependency tree (``requirements.lock``) with pip-audit.

pip-audit asks PyPI's vulnerability data for every pinned release. When the service cannot be
reached the script says so and exits 0 (nothing was audited, which is not a failure of the tree);
found vulnerabilities exit 1. Packages the service does not know are listed as not audited.

Run: ``.venv/bin/python bench/audit.py [--lock requirements.lock]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=LOCK)
    args = parser.parse_args()
    command = [sys.executable, "-m", "pip_audit", "-r", str(args.lock), "--require-hashes", "--disable-pip",
               "--progress-spinner", "off", "--format", "json", "--timeout", "20"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print("advisory database not reachable (or pip-audit failed); nothing was audited:")
        print((done.stderr or done.stdout).strip().splitlines()[-1] if (done.stderr or done.stdout).strip() else "no output")
        return 0
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    if dependencies and not audited:
        print(f"advisory database not reachable from here: the service knew none of the {len(dependencies)} "
              f"locked packages (a registry mirror without PyPI's JSON API answers 'not found'); nothing was audited")
        return 0
    print(f"{len(dependencies)} locked packages: {len(audited)} audited, {len(skipped)} unknown to the "
          f"advisory service (not audited), {len(vulnerable)} with known vulnerabilities")
    for dep in vulnerable:
        ids = ", ".join(v["id"] for v in dep["vulns"])
        print(f"  {dep['name']} {dep['version']}: {ids}")
    if skipped:
        print("  not audited: " + ", ".join(d["name"] for d in skipped))
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
