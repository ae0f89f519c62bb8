"""``cohort_report.html``: distributions of AHI, TST, SE, stage shares and SpO2 nadir over the cohort.

One self-contained HTML page (figures embedded as PNG): counts of nights done and failed, one
histogram per figure and a box plot of the stage shares. Only night ids and measured values
appear; no file names.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["REPORT", "DISTRIBUTIONS", "write_report"]

REPORT = "cohort_report.html"
# (column, title, unit) of each histogram.
DISTRIBUTIONS = (
    ("ahi", "AHI", "events/h"),
    ("tst_min", "Total sleep time", "min"),
    ("se_pct", "Sleep efficiency", "%"),
    ("spo2_min", "SpO2 nadir", "%"),
)
STAGE_SHARES = ("W_pct", "N1_pct", "N2_pct", "N3_pct", "R_pct")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def distribution_figure(nights: pd.DataFrame):
    """A 2x3 figure: the `DISTRIBUTIONS` histograms and a box plot of the stage shares.

    The margins are fixed for this grid of short titles and numeric ticks: ``tight_layout`` and a
    tight bounding box measured every text first, two more passes that tripled the drawing time
    (the report is drawn once at the end of a cohort run, while no night runs beside it).
    """
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (column, title, unit) in zip(axes.flat, DISTRIBUTIONS):
        values = pd.to_numeric(nights[column], errors="coerce").dropna()
        if len(values):
            ax.hist(values, bins=min(20, max(5, len(values))), color="#4477aa", edgecolor="white")
            ax.axvline(values.median(), color="#cc6677", linestyle="--", label=f"median {values.median():.1f}")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not assessable in any night", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title} (n={len(values)})")
        ax.set_xlabel(unit)
        ax.set_ylabel("nights")
    ax = axes.flat[len(DISTRIBUTIONS)]
    shares = [pd.to_numeric(nights[c], errors="coerce").dropna() for c in STAGE_SHARES]
    if any(len(s) for s in shares):
        ax.boxplot([s.to_numpy() for s in shares], tick_labels=[c.split("_")[0] for c in STAGE_SHARES])
    ax.set_title("Stage shares (% of TST; W: % of time in bed)")
    ax.set_ylabel("%")
    axes.flat[-1].axis("off")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.95, wspace=0.28, hspace=0.35)
    return fig


def write_report(nights: pd.DataFrame, path) -> Path:
    """Write the cohort report for the ``nights.parquet`` table to `path` (HTML).

    Examples
    --------
    >>> from sleeplm.cohort.night import measure_night
    >>> from sleeplm.cohort.tables import cohort_salt, load_cohort, write_tables
    >>> row = {"path": str(tiny_night_path()), "subject_id": None, "night_label": None, "channel_map": None}
    >>> _ = write_tables(tmp_dir, [measure_night(row, str(tmp_dir), cohort_salt(tmp_dir))])
    >>> html = write_report(load_cohort(tmp_dir).nights, tmp_dir / "cohort_report.html").read_text()
    >>> html.lstrip().lower().startswith("<!doctype html"), "tiny_night" in html     # no file names in the report
    (True, False)
    """
    done = nights[nights["status"] == "done"]
    n_failed = int((nights["status"] == "failed").sum())
    rows = []
    for column, title, unit in DISTRIBUTIONS:
        values = pd.to_numeric(done[column], errors="coerce").dropna()
        cells = ("" if not len(values) else f"{values.median():.1f}", "" if not len(values) else
                 f"{values.quantile(0.25):.1f} to {values.quantile(0.75):.1f}", str(len(values)))
        rows.append(f"<tr><td>{html.escape(title)} ({unit})</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    severity = done["severity"].fillna("not assessable").value_counts()
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Cohort report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 10px;text-align:left}}</style>
</head><body>
<h1>Cohort report (measured, no LLM)</h1>
<p>{len(done)} nights measured, {n_failed} failed (see failed.csv). Screening figures, not a diagnosis.</p>
<table><tr><th>figure</th><th>median</th><th>interquartile range</th><th>nights</th></tr>{''.join(rows)}</table>
<h2>AHI severity bands</h2>
<ul>{''.join(f'<li>{html.escape(str(band))}: {n}</li>' for band, n in severity.items())}</ul>
<h2>Distributions</h2>
<img alt="cohort distributions" src="data:image/png;base64,{_png(distribution_figure(done))}">
</body></html>
"""
    path = Path(path)
    path.write_text(body)
    return path
