"""A conversation about a cohort of nights (a `sleeplm-assistant cohort` folder, or two nights of one person).

`CohortSession` is a `NightSession` whose tools are the cohort tools (`tools.cohort`): the same
agent, answer check, grounding and tool-only mode, over the cohort table instead of one night::

    session = CohortSession(llm=None)
    session.load("cohort_out/")                        # a folder written by `sleeplm-assistant cohort`
    session.load_nights(["diag.edf", "cpap.edf"])      # or two nights of one person (measured on Ray first)
    session.ask("did AHI improve between night 1 and night 2?").answer
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from assistant.session import NightSession
from sleeplm.cohort import CohortTables, load_cohort, run
from sleeplm.errors import CohortRunError
from tools.cohort import COHORT_TOOLS, CohortContext

__all__ = ["CohortSession", "route_cohort_question", "is_cohort_folder", "measure_nights"]

# Words of a question -> the figure it asks about (first match wins; specific before general).
_METRIC_WORDS = (
    (r"\bsupine\b", "ahi_supine"), (r"\bodi\b", "odi3"), (r"\bt90\b", "t90_min"),
    (r"\b(nadir|lowest|minimum)\b.*\b(spo2|oxygen|saturation)|\b(spo2|oxygen|saturation)\b.*\b(nadir|lowest|minimum)\b",
     "spo2_min"),
    (r"\b(spo2|oxygen|saturation)\b", "spo2_mean"), (r"\bahi\b|\bapn|\bhypopn|\bbreathing\b", "ahi"),
    (r"\befficien", "se_pct"), (r"\btst\b|total sleep|slept|sleep time", "tst_min"), (r"\bwaso\b", "waso_min"),
    (r"\b(deep|n3)\b", "N3_pct"), (r"\b(rem)\b", "R_pct"), (r"\blatency\b", "sol_min"),
    (r"\bheart rate\b|\bpulse\b", "hr_mean"),
)
_NUMBER = r"(\d+(?:\.\d+)?)"


def _metric(question: str) -> str | None:
    for pattern, metric in _METRIC_WORDS:
        if re.search(pattern, question):
            return metric
    return None


def route_cohort_question(question: str, audience: str = "clinician") -> list[tuple[str, dict]]:
    """Cohort tools for a question when no language model is available (keyword rules).

    Returns
    -------
    list of (tool name, arguments); empty when no rule matches (out of scope).
    """
    q = question.lower()
    metric = _metric(q)
    above = re.search(rf"\b(over|above|more than|greater than|higher than|exceed\w*|>)\s*{_NUMBER}", q)
    below = re.search(rf"\b(under|below|less than|lower than|<)\s*{_NUMBER}", q)
    if metric and (above or below):
        args = {"metric": metric}
        if above:
            args["above"] = float(above.group(2))
        if below:
            args["below"] = float(below.group(2))
        return [("find_nights", args)]
    metrics = {"metrics": [metric]} if metric else {}
    if re.search(r"\b(rest of|the others|cohort|other nights)\b", q) and re.search(r"\bcompar|\bversus\b|\bvs\b|\bhow does\b", q):
        night = re.search(r"\bnight\s+([0-9a-f]{6,16}|\d+)\b", q)
        if night:
            return [("compare_to_cohort", {"night": night.group(0) if len(night.group(1)) < 6 else night.group(1), **metrics})]
    if re.search(r"\b(improv|better|worse|chang|between|compar|differ)", q):
        pair = re.findall(r"\bnight\s+(\d+)\b", q)
        args = {"first": f"night {pair[0]}", "second": f"night {pair[1]}"} if len(pair) >= 2 else {}
        return [("compare_nights", {**args, **metrics})]
    if re.search(r"\b(cohort|nights|summar|overview|how many)\b", q):
        return [("cohort_overview", {})]
    return []


def is_cohort_folder(path) -> bool:
    """True for a folder written by `sleeplm.cohort.run` (it holds ``nights.parquet``)."""
    return Path(path).is_dir() and (Path(path) / "nights.parquet").is_file()


class CohortSession(NightSession):
    """A conversation about a cohort table; see the module docstring."""

    SCOPE = "cohort"
    TOOLS = COHORT_TOOLS
    CONTEXT = CohortContext

    def route(self, question: str, audience: str = "clinician") -> list[tuple[str, dict]]:
        return route_cohort_question(question, audience)

    def load(self, path, progress=None, channel_map=None, position_map=None, stage_cross_check=True) -> CohortTables:
        """Open a cohort folder (`sleeplm.cohort.load_cohort`); a new cohort starts a new conversation.

        The other arguments belong to loading one recording and are not used here.
        """
        tables = load_cohort(path)
        self.night = CohortContext(tables=tables)
        self.reset()
        return tables

    def load_nights(self, paths: Sequence, labels: Sequence[str] | None = None, **run_options) -> CohortTables:
        """Measure nights of one person (e.g. diagnostic and treatment) on Ray and open them as a cohort.

        Parameters
        ----------
        paths : the recordings, in order (labelled "night 1", "night 2", ... unless `labels`).
        labels : night labels, one per path.
        run_options : handed to `sleeplm.cohort.run` (``address``, ``num_cpus``, ...).

        Raises
        ------
        CohortRunError : a night could not be measured (its label, error class and message).
        """
        return self.load(measure_nights(paths, self.workdir / "cohort", labels, **run_options))


def measure_nights(paths: Sequence, out_dir, labels: Sequence[str] | None = None, channel_map: dict | None = None,
                   **run_options) -> Path:
    """Measure nights of one person on Ray (`sleeplm.cohort.run`) into the cohort folder `out_dir`.

    The nights are labelled "night 1", "night 2", ... in the order given (or `labels`) and share
    one subject id (salted like every id). Used by ``ask A.edf B.edf`` and ``serve --nights``.

    Parameters
    ----------
    paths : the recordings, in order.
    out_dir : the cohort folder to write (a manifest ``nights.csv`` goes beside it).
    labels : night labels, one per path.
    channel_map : ``{canonical: file label}`` for every night.
    run_options : handed to `sleeplm.cohort.run` (``address``, ``num_cpus``, ...).

    Returns
    -------
    `out_dir`, holding the cohort tables.

    Raises
    ------
    CohortRunError : a night could not be measured (its label, error class and message: no file name).
    """
    out = Path(out_dir)
    labels = list(labels or [f"night {i}" for i in range(1, len(paths) + 1)])
    manifest = out.parent / "nights.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": [str(Path(p).resolve()) for p in paths], "subject_id": "person", "night_label": labels,
                  "channel_map": json.dumps(channel_map) if channel_map else ""}).to_csv(manifest, index=False)
    nights = run(manifest, out, **run_options).nights
    failed = nights[nights["status"] == "failed"]
    if len(failed):
        raise CohortRunError("; ".join(f"{row.night_label} could not be measured ({row.errors})"
                                       for row in failed.itertuples()))
    return out
