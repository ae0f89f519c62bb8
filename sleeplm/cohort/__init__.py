"""Cohorts: many nights through load -> measurements -> SleepLM on Ray Data, into tidy tables.

``run(source, out_dir)`` drives the steps below on Ray Data; here they are by hand, on a folder
holding one tiny simulated night (conftest.py):

>>> import dataclasses, shutil
>>> from sleeplm.cohort import discover_nights, load_cohort
>>> from sleeplm.cohort.night import measure_night
>>> from sleeplm.cohort.tables import cohort_salt, write_tables
>>> (tmp_dir / "study").mkdir()
>>> _ = shutil.copy(tiny_night_path(), tmp_dir / "study" / "night1.edf")
>>> tasks = discover_nights(tmp_dir / "study")
>>> result = measure_night(dataclasses.asdict(tasks[0]), str(tmp_dir / "out"), cohort_salt(tmp_dir / "out"))
>>> sorted(write_tables(tmp_dir / "out", [result]))
['events.parquet', 'failed.csv', 'hypnograms.parquet', 'nights.parquet']
>>> cohort = load_cohort(tmp_dir / "out")
>>> cohort.nights.loc[0, ["status", "severity"]].tolist(), len(cohort.hypnograms)
(['done', 'severe'], 30)

Modules: `inputs` (a folder or a CSV manifest -> `NightTask`), `night` (one night: the Ray task
and the SleepLM actor, written atomically), `tables` (the tidy tables, `load_cohort`), `report`
(``cohort_report.html``), `runner` (`run`, the Ray Data pipeline). This room imports io, measure
and model; nothing else in `sleeplm` imports it.
"""

from sleeplm.cohort.inputs import NightTask, discover_nights
from sleeplm.cohort.runner import run
from sleeplm.cohort.tables import CohortTables, load_cohort
from sleeplm.errors import CohortInputError, CohortRunError

__all__ = ["CohortInputError", "CohortRunError", "CohortTables", "NightTask", "discover_nights", "load_cohort", "run"]
