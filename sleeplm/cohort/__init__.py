"""Cohorts: many nights through load -> measurements -> SleepLM on Ray Data, into tidy tables.

>>> from sleeplm.cohort import run, load_cohort
>>> cohort = run("study/", "cohort_out/", progress=True)          # doctest: +SKIP
>>> cohort.nights.query("ahi > 30")[["night_id", "ahi"]]           # doctest: +SKIP
>>> load_cohort("cohort_out/").events.groupby("night_id").size()  # doctest: +SKIP

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
