"""The built-in demo night: a simulated 1.5-h AASM recording with known truth, made once per machine.

It is generated deterministically on first use into the cache directory (``$SLEEPLM_CACHE``, else
``~/.cache/sleeplm-assistant``) so nothing large is committed, and the app can open it at once.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from sleeplm.paths import cache_root

__all__ = ["DEMO_SETTINGS", "demo_recording_path"]

logger = logging.getLogger(__name__)

# Changing these changes the demo night: bump _DEMO_REVISION so that old caches are not reused.
DEMO_SETTINGS = {"duration_h": 1.5, "seed": 20240506, "severity": "moderate", "montage": "aasm", "sfreq": 256,
                 "start_clock": "23:10:00"}
_DEMO_REVISION = 2  # 2: airflow and belts stored in mV


def demo_recording_path() -> Path:
    """Path of the demo night's EDF+ (its truth is ``<path>.truth.json``), simulating it on first use.

    Returns
    -------
    Path to ``demo_night_s<simulator version>r<revision>.edf`` in `sleeplm.paths.cache_root()`, so a newer simulator
    or new settings never reuse an old file. Concurrent first calls are safe: each writes
    into its own temporary folder and moves the finished files into place (truth first).

    Examples
    --------
    >>> path = demo_recording_path()            # simulated on first use (a few seconds), then cached
    >>> path.parent == cache_root(), path.suffix, demo_recording_path() == path
    (True, '.edf', True)
    >>> from sleeplm.synthetic import load_truth
    >>> truth = load_truth(path)
    >>> truth.start_clock, len(truth.hypnogram), truth.severity   # DEMO_SETTINGS: 1.5 h from 23:10:00
    ('23:10:00', 180, 'moderate')
    """
    from sleeplm.synthetic import SIMULATOR_VERSION, simulate_night, truth_path, write_night

    target = cache_root() / f"demo_night_s{SIMULATOR_VERSION}r{_DEMO_REVISION}.edf"
    if target.exists() and truth_path(target).exists():
        return target
    logger.info("simulating the demo night into the cache (first use)")
    night = simulate_night(**DEMO_SETTINGS)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        written = write_night(night, Path(scratch) / target.name)
        os.replace(truth_path(written), truth_path(target))
        os.replace(written, target)
    return target
