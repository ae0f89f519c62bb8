"""Tools over a cohort table (`sleeplm.cohort.load_cohort`): questions across nights.

- `cohort_overview`: how many nights, subjects and failures, and the cohort's medians;
- `find_nights`: nights whose figure passes a threshold ("which nights have AHI over 30?");
- `compare_to_cohort`: one night against the others (value, cohort median, percentile), with a figure;
- `compare_nights`: two nights side by side ("did AHI improve between night 1 and night 2?"), with a figure.

Nights are named by their salted night id and the manifest's night label; the tools never see
file names (``failed.csv`` is counted, not read out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from langchain.tools import ToolRuntime, tool  # noqa: E402
from langchain_core.tools import ToolException  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from sleeplm.cohort import CohortTables  # noqa: E402
from tools.context import configure, night_tool_errors, rounded  # noqa: E402

__all__ = ["CohortContext", "COHORT_TOOLS", "METRICS", "cohort_overview", "find_nights", "compare_to_cohort",
           "compare_nights"]

# Figure -> (name, unit, True when a lower value is better).
METRICS: dict[str, tuple[str, str, bool | None]] = {
    "ahi": ("AHI", "events/h", True),
    "rei": ("REI", "events/h", True),
    "ahi_supine": ("supine AHI", "events/h", True),
    "ahi_nonsupine": ("non-supine AHI", "events/h", True),
    "ahi_rem": ("REM AHI", "events/h", True),
    "ahi_nrem": ("NREM AHI", "events/h", True),
    "odi3": ("ODI 3%", "events/h", True),
    "odi4": ("ODI 4%", "events/h", True),
    "t90_min": ("T90", "min", True),
    "spo2_min": ("SpO2 nadir", "%", False),
    "spo2_mean": ("mean SpO2", "%", False),
    "tst_min": ("total sleep time", "min", False),
    "se_pct": ("sleep efficiency", "%", False),
    "sol_min": ("sleep onset latency", "min", True),
    "rem_latency_min": ("REM latency", "min", None),
    "waso_min": ("WASO", "min", True),
    "n_awakenings": ("awakenings", "", True),
    "N1_pct": ("N1 share", "% of TST", None),
    "N2_pct": ("N2 share", "% of TST", None),
    "N3_pct": ("N3 share", "% of TST", None),
    "R_pct": ("REM share", "% of TST", None),
    "W_pct": ("wake share", "% of TIB", True),
    "hr_mean": ("mean heart rate", "bpm", None),
}
Metric = Literal[tuple(METRICS)]  # type: ignore[valid-type]
HEADLINE = ("ahi", "tst_min", "se_pct", "spo2_min", "N3_pct", "R_pct")
SOURCE = "cohort table (measured per night)"


@dataclass
class CohortContext:
    """The cohort the tools run on (the agent's runtime context).

    Attributes
    ----------
    tables : the cohort's tables.
    audience : "clinician" or "patient" (style of the current turn).
    """

    tables: CohortTables
    audience: str = "clinician"

    @property
    def nights(self) -> pd.DataFrame:
        """The nights that were measured."""
        return self.tables.done

    def night(self, name: str) -> pd.Series:
        """A measured night by night id (or its first characters) or by its unique night label."""
        key = str(name).strip().lower()
        nights = self.nights
        by_label = nights[nights["night_label"].fillna("").str.lower() == key]
        by_id = nights[nights["night_id"].str.startswith(key)] if key else nights.iloc[:0]
        found = by_label if len(by_label) == 1 else by_id
        if len(found) != 1:
            known = "; ".join(f"{r.night_id}" + (f" ({r.night_label})" if isinstance(r.night_label, str) else "")
                              for r in nights.head(20).itertuples())
            raise ToolException(f"No single night matches {name!r}. Nights (id and label): {known}.")
        return found.iloc[0]


def _name(row: pd.Series) -> str:
    label = row.get("night_label")
    return f"night {row['night_id']}" + (f" ({label})" if isinstance(label, str) and label else "")


def _value(row: pd.Series, metric: str):
    return rounded(pd.to_numeric(row.get(metric), errors="coerce"), 2)


def _fmt(metric: str, value) -> str:
    unit = METRICS[metric][1]
    return "not assessable" if value is None else f"{value:g}{' ' + unit if unit and not unit.startswith('%') else unit}"


class OverviewArgs(BaseModel):
    pass


@tool("cohort_overview", args_schema=OverviewArgs)
@night_tool_errors
def cohort_overview(*, runtime: ToolRuntime[CohortContext]) -> dict:
    """What the cohort holds: number of nights measured and failed, subjects, night labels, and
    the median and range of AHI, total sleep time, sleep efficiency, SpO2 nadir, N3 and REM shares.
    Use for 'summarise the cohort', 'how many nights', 'what is in this folder'."""
    cohort = runtime.context
    nights, tables = cohort.nights, cohort.tables
    stats, findings = {}, []
    n_subjects = int(nights["subject_id"].nunique())
    findings.append(f"{len(nights)} nights measured, {len(tables.failed)} failed to load or measure"
                    + (f", {n_subjects} subjects" if n_subjects else ", no subject ids") + ".")
    for metric in HEADLINE:
        values = pd.to_numeric(nights[metric], errors="coerce").dropna()
        if len(values):
            stats[metric] = {"median": rounded(values.median(), 2), "min": rounded(values.min(), 2),
                             "max": rounded(values.max(), 2), "n": int(len(values))}
            findings.append(f"{METRICS[metric][0]}: median {_fmt(metric, stats[metric]['median'])}, range "
                            f"{_fmt(metric, stats[metric]['min'])} to {_fmt(metric, stats[metric]['max'])} "
                            f"({len(values)} nights).")
    bands = nights["severity"].fillna("not assessable").value_counts()
    findings.append("AHI bands: " + ", ".join(f"{band} {n}" for band, n in bands.items()) + ".")
    return {"tool": "cohort_overview", "source": SOURCE, "findings": findings, "statistics": stats,
            "nights": [{"night_id": r.night_id, "night_label": r.night_label, "subject_id": r.subject_id}
                       for r in nights.itertuples()][:50]}


class FindArgs(BaseModel):
    metric: Metric = Field(description="the figure, e.g. 'ahi', 'tst_min', 'se_pct', 'spo2_min', 'odi4', 'N3_pct'")
    above: float | None = Field(None, description="keep nights whose value is above this (e.g. 30 for 'AHI over 30')")
    below: float | None = Field(None, description="keep nights whose value is below this")


@tool("find_nights", args_schema=FindArgs)
@night_tool_errors
def find_nights(metric: str, above: float | None = None, below: float | None = None, *,
                runtime: ToolRuntime[CohortContext]) -> dict:
    """Nights of the cohort whose figure is above and/or below a threshold, with their ids and
    values, highest first. Use for 'which nights have AHI over 30?', 'nights with sleep
    efficiency below 80 %', 'who has an SpO2 nadir under 85?'."""
    if above is None and below is None:
        raise ToolException("Give a threshold: 'above' and/or 'below' (e.g. above=30 for AHI over 30).")
    nights = runtime.context.nights
    values = pd.to_numeric(nights[metric], errors="coerce")
    keep = values.notna()
    if above is not None:
        keep &= values > above
    if below is not None:
        keep &= values < below
    hits = nights[keep].assign(_v=values[keep]).sort_values("_v", ascending=False)
    name, _, _ = METRICS[metric]
    condition = " and ".join(part for part in (f"above {above:g}" if above is not None else "",
                                                 f"below {below:g}" if below is not None else "") if part)
    rows = [{"night_id": r["night_id"], "night_label": r["night_label"], metric: _value(r, metric)} for _, r in hits.iterrows()]
    findings = [f"{len(rows)} of {int(values.notna().sum())} nights (with an assessable {name}) have {name} {condition}"
                + (f" ({int(values.isna().sum())} not assessable)." if values.isna().any() else ".")]
    findings += [f"{_name(r)}: {name} {_fmt(metric, _value(r, metric))}" for _, r in hits.head(30).iterrows()]
    return {"tool": "find_nights", "source": SOURCE, "metric": metric, "findings": findings, "nights": rows}


class CompareCohortArgs(BaseModel):
    night: str = Field(description="night id (or its first characters) or night label")
    metrics: list[Metric] | None = Field(None, description="figures to compare; empty = AHI, TST, SE, SpO2 nadir, N3 and REM shares")


def _comparison_figure(title: str, labels: list[str], groups: dict[str, list[float | None]]):
    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 3.2), squeeze=False)
    for ax, label, values in zip(axes[0], labels, zip(*groups.values())):
        ax.bar(list(groups), [np.nan if v is None else v for v in values], color=["#4477aa", "#cc6677", "#999933"][: len(groups)])
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@tool("compare_to_cohort", args_schema=CompareCohortArgs, response_format="content_and_artifact")
@night_tool_errors
def compare_to_cohort(night: str, metrics: list[str] | None = None, *, runtime: ToolRuntime[CohortContext]):
    """One night against the rest of the cohort: its value, the median of the other nights and
    the share of other nights below it (percentile), per figure, with a figure for the user.
    Use for 'how does this night compare with the rest of the cohort?'."""
    cohort = runtime.context
    row = cohort.night(night)
    others = cohort.nights[cohort.nights["night_id"] != row["night_id"]]
    if others.empty:
        raise ToolException("The cohort has no other measured night to compare with.")
    metrics = list(metrics or HEADLINE)
    table, findings = [], []
    for metric in metrics:
        value = _value(row, metric)
        rest = pd.to_numeric(others[metric], errors="coerce").dropna()
        median = rounded(rest.median(), 2) if len(rest) else None
        percentile = rounded(100 * float((rest < value).mean()), 0) if value is not None and len(rest) else None
        table.append({"metric": metric, "value": value, "cohort_median": median, "percentile": percentile,
                      "n_other_nights": int(len(rest))})
        name = METRICS[metric][0]
        if value is None or median is None:
            findings.append(f"{name}: not assessable for this night or the others.")
        else:
            findings.append(f"{name}: {_fmt(metric, value)} vs cohort median {_fmt(metric, median)}; higher than "
                            f"{percentile:g}% of the other {len(rest)} nights.")
    findings.insert(0, f"{_name(row)} compared with the other {len(others)} nights of the cohort.")
    fig = _comparison_figure(f"{_name(row)} vs cohort median", [METRICS[m][0] for m in metrics],
                             {"this night": [t["value"] for t in table], "cohort median": [t["cohort_median"] for t in table]})
    return {"tool": "compare_to_cohort", "source": SOURCE, "night_id": row["night_id"], "findings": findings,
            "comparison": table}, fig


class CompareNightsArgs(BaseModel):
    first: str | None = Field(None, description="the earlier night: id or label (e.g. 'night 1'); empty with a two-night cohort")
    second: str | None = Field(None, description="the later night: id or label (e.g. 'night 2'); empty with a two-night cohort")
    metrics: list[Metric] | None = Field(None, description="figures to compare; empty = AHI, TST, SE, SpO2 nadir, N3 and REM shares")


@tool("compare_nights", args_schema=CompareNightsArgs, response_format="content_and_artifact")
@night_tool_errors
def compare_nights(first: str | None = None, second: str | None = None, metrics: list[str] | None = None, *,
                   runtime: ToolRuntime[CohortContext]):
    """Two nights side by side (e.g. a person's diagnostic and treatment nights): each figure in
    both, the change and whether it improved, with a figure for the user. Use for 'did AHI
    improve between night 1 and night 2?', 'compare the two nights'."""
    cohort = runtime.context
    if first is None or second is None:
        if len(cohort.nights) != 2:
            raise ToolException("Name the two nights (id or label): this cohort has "
                                f"{len(cohort.nights)} measured nights.")
        ordered = cohort.nights.sort_values(["night_label", "night_id"], na_position="last")
        a, b = ordered.iloc[0], ordered.iloc[1]
    else:
        a, b = cohort.night(first), cohort.night(second)
    if a["night_id"] == b["night_id"]:
        raise ToolException("Both names point to the same night; name two different nights.")
    metrics = list(metrics or HEADLINE)
    table, findings = [], [f"{_name(a)} -> {_name(b)}"
                           + (" (same subject)." if isinstance(a.get("subject_id"), str) and a.get("subject_id") == b.get("subject_id")
                              else ".")]
    for metric in metrics:
        va, vb = _value(a, metric), _value(b, metric)
        name, _, lower_better = METRICS[metric]
        change = None if va is None or vb is None else rounded(vb - va, 2)
        if change is None:
            verdict = "not assessable in both nights"
        elif change == 0 or lower_better is None:
            verdict = "unchanged" if change == 0 else ("higher" if change > 0 else "lower")
        else:
            verdict = "improved" if (change < 0) == lower_better else "worsened"
        table.append({"metric": metric, "first": va, "second": vb, "change": change, "verdict": verdict})
        findings.append(f"{name}: {_fmt(metric, va)} -> {_fmt(metric, vb)}"
                        + ("" if change is None else f" (change {change:+g})") + f": {verdict}.")
    fig = _comparison_figure(f"{_name(a)} vs {_name(b)}", [METRICS[m][0] for m in metrics],
                             {str(a.get("night_label") or a["night_id"]): [t["first"] for t in table],
                              str(b.get("night_label") or b["night_id"]): [t["second"] for t in table]})
    return {"tool": "compare_nights", "source": SOURCE, "nights": [a["night_id"], b["night_id"]], "findings": findings,
            "comparison": table}, fig


for _tool in (cohort_overview, find_nights, compare_to_cohort, compare_nights):
    configure(_tool)

COHORT_TOOLS = [cohort_overview, find_nights, compare_to_cohort, compare_nights]
