"""Run every benchmark in turn, each in its own process so peak-memory figures stay separate.

Each benchmark prints its own baseline and ratio (measured in the same process); this script
only runs them one after the other and says which failed. ``--quick`` runs smaller sizes to
check that the harness works; the figures quoted in README come from the full run.

Run: ``nice .venv/bin/python bench/run_all.py [--quick] [--only load measure accuracy model cohort real]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

# name -> (full-size arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "load": ([], ["--hours", "1", "--repeats", "1"]),
    "measure": ([], ["--hours", "1"]),
    "accuracy": ([], ["--hours", "1", "--seeds", "0", "--montages", "aasm", "--no-yasa"]),
    "model": ([], ["--quick"]),
    "decimate": ([], ["--hours", "1", "--repeats", "1"]),
    "yasa_detectors": ([], ["--hours", "1"]),
    "cohort": ([], ["--quick"]),
    "periods": ([], ["--hours", "2", "--seeds", "0", "--severities", "moderate"]),
    "grounding": ([], ["--hours", "1", "--seeds", "0", "--severities", "severe"]),
    "audit": ([], []),
    "real": ([], []),  # expert-scored PSG from --data-dir; lists recordings absent from this machine
    "consistency": ([], ["--hours", "0.5", "--domains", "respiratory"]),
    "background": ([], ["--hours", "0.5"]),
    "rescore": ([], ["--hours", "1", "--repeat", "1"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness only")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()

    failed = []
    for name in args.only:
        full_args, quick_args = BENCHMARKS[name]
        command = [sys.executable, str(BENCH_DIR / f"{name}.py"), *(quick_args if args.quick else full_args)]
        print(f"\n=== bench/{name}.py {' '.join(command[2:])}", flush=True)
        started = time.perf_counter()
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
        print(f"=== bench/{name}.py took {time.perf_counter() - started:.0f} s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
