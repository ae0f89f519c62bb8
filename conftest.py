"""Doctest set-up: the names every ``>>>`` example in `sleeplm/` may use without importing them.

pytest collects the library's docstring examples (``--doctest-modules`` on `sleeplm`, see
pyproject.toml). Examples need a night to work on; these helpers make one tiny simulated night
once per test session (15 min, 128 Hz, AASM montage, the simulator's own scoring, starting 23:00:00)
and hand out the same objects to every example:

``tiny_night_path()``  the EDF+ file (its truth beside it as ``<file>.truth.json``)
``tiny_recording()``   that file loaded with `sleeplm.load_recording`
``tiny_analysis()``    `sleeplm.measure.analysis.analyze_night` of it (the file's own stages)
``tiny_analysis_compared()``  the same with the automatic scoring compared with the file's (YASA runs)
``tiny_model()``       `SleepLM.from_config("sleeplm_tiny")`, the random tiny network, on one thread
``tiny_physiology()``  a fresh `sleeplm.synthetic.physiology.NightPhysiology` of a planned 10-min
                       "severe" night (the same plan every call; EEG at 64 Hz)
``tmp_dir``            a fresh empty folder (a `pathlib.Path`) for examples that write files
"""

from __future__ import annotations

import functools
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# fp32 SleepLM encoder unless a test asks for bf16: outputs are compared with fp32 references at 1e-5.
os.environ.setdefault("SLEEPLM_PRECISION", "fp32")

TINY_NIGHT = {"duration_h": 0.25, "seed": 3, "severity": "severe", "montage": "aasm", "sfreq": 128,
              "annotations": True, "start_clock": "23:00:00"}


@pytest.fixture(scope="session", autouse=True)
def _doctest_names(doctest_namespace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("doctest_night")

    @functools.cache
    def tiny_night_path():
        from sleeplm.synthetic import simulate_night, write_night

        return write_night(simulate_night(**TINY_NIGHT), folder / "tiny_night.edf")

    @functools.cache
    def tiny_recording():
        from sleeplm import load_recording

        return load_recording(tiny_night_path())

    @functools.cache
    def tiny_analysis():
        from sleeplm.measure.analysis import analyze_night

        return analyze_night(tiny_recording(), automatic_staging=False)

    @functools.cache
    def tiny_analysis_compared():
        from sleeplm.measure.analysis import compare_with_automatic

        return compare_with_automatic(tiny_recording(), tiny_analysis())

    @functools.cache
    def tiny_model():
        import torch

        from sleeplm.model.inference import SleepLM

        torch.set_num_threads(1)
        return SleepLM.from_config("sleeplm_tiny")

    @functools.cache
    def tiny_scenario():
        import numpy as np

        from sleeplm.synthetic.hypnogram import simulate_hypnogram
        from sleeplm.synthetic.scenario import plan_night

        rng = np.random.default_rng(1)
        return plan_night(simulate_hypnogram(20, rng), rng, "severe")

    def tiny_physiology():
        from sleeplm.synthetic.physiology import NightPhysiology

        return NightPhysiology(tiny_scenario(), seed=1, sfreq=64)

    doctest_namespace.update(tiny_night_path=tiny_night_path, tiny_recording=tiny_recording,
                             tiny_analysis=tiny_analysis, tiny_analysis_compared=tiny_analysis_compared, tiny_model=tiny_model, tiny_physiology=tiny_physiology)


@pytest.fixture(autouse=True)
def _doctest_tmp_dir(request, doctest_namespace):
    """Each doctest gets its own empty ``tmp_dir`` (other tests do not pay for one)."""
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace["tmp_dir"] = request.getfixturevalue("tmp_path")
