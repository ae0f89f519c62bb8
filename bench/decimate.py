"""Benchmark: our float32 decimator vs `scipy.signal.resample_poly` with the same anti-aliasing FIR.

`sleeplm.io.preprocess.decimate` computes exactly ``resample_poly(x, 1, factor, window=taps)``
(the test suite checks equality to 1e-5); this script shows what the own code buys. It times
both on one night-long channel (default 8 h at 256 Hz -> 64 Hz, factor 4, and 128 -> 64 Hz,
factor 2), best of `--repeats`, in this one process, and prints the CPU-time ratio (robust to
other load on the machine), the wall-time ratio and the largest absolute difference.

Run: ``nice .venv/bin/python bench/decimate.py [--hours 8] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.signal import resample_poly

from sleeplm.io.preprocess import antialias_fir, decimate


def best_of(repeats: int, fn, *args) -> tuple[float, float, np.ndarray]:
    """Best CPU and wall seconds over `repeats` calls, and the last result."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(*args)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for sfreq, factor in ((256, 4), (128, 2)):
        x = rng.normal(0, 30, int(args.hours * 3600 * sfreq)).astype(np.float32)
        taps = antialias_fir(1, factor)
        ref_cpu, ref_wall, reference = best_of(args.repeats, lambda: resample_poly(x, 1, factor, window=taps))
        own_cpu, own_wall, ours = best_of(args.repeats, lambda: decimate(x, factor))
        diff = float(np.max(np.abs(ours - reference.astype(np.float32))))
        print(f"{args.hours:g} h at {sfreq} Hz -> {sfreq // factor} Hz ({x.size:,} samples, {taps.size} taps): "
              f"resample_poly {ref_cpu:.3f} s CPU / {ref_wall:.3f} s wall; decimate {own_cpu:.3f} s CPU / "
              f"{own_wall:.3f} s wall; CPU ratio {ref_cpu / own_cpu:.1f}x, wall ratio {ref_wall / own_wall:.1f}x; "
              f"max |difference| {diff:.2e} (signal SD 30)")


if __name__ == "__main__":
    main()
