"""Files a user takes away from one night: events CSV, EDF+ annotations, PDF report.

- `events_table(rec, events)`: the events with clock time, elapsed time and epoch range per row.
- `write_events_csv(rec, events, path)`: that table as CSV (the app's download and
  ``sleeplm-assistant analyze``'s ``events.csv``).
- `write_annotations_edf(rec, events, path, hypnogram=None)`: an annotations-only EDF+ file
  (stages and events, AASM-style labels) that EDFbrowser, MNE (`mne.read_annotations`) and
  scoring tools import next to the original recording.
- `write_report_pdf(rec, path, summary, hypnogram, events, answers)`: a night report:
  summary table, overview figure, event table and the chat's cited answers.

Nothing identifying is written: `Recording` holds no patient or recording-date fields, and
the EDF+ header gets the anonymous EDF+ placeholders ("X").

Examples
--------
>>> rec, analysis = tiny_recording(), tiny_analysis()      # a 15-min night (conftest.py)
>>> write_events_csv(rec, analysis.events, tmp_dir / "events.csv").name
'events.csv'
>>> pdf = write_report_pdf(rec, tmp_dir / "night.pdf", summary=analysis.summary, hypnogram=analysis.staging.hypnogram,
...                        events=analysis.events, answers=[("How was my night?", "You slept 14 min...")])
>>> pdf.read_bytes()[:5]
b'%PDF-'
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import textwrap
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from edfio import Edf, EdfAnnotation
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from sleeplm.errors import ExportError
from sleeplm.report.plots import plot_night
from sleeplm.io.recording import EPOCH_SEC, Recording, format_elapsed

__all__ = [
    "EVENT_COLUMNS", "STAGE_LABELS", "ExportError", "json_safe", "events_table", "write_events_csv", "annotation_label",
    "write_annotations_edf", "write_report_pdf", "agreement_lines",
]

logger = logging.getLogger(__name__)

EVENT_COLUMNS = [
    "kind", "subtype", "start_s", "end_s", "duration_s", "clock_start", "clock_end", "elapsed_start",
    "epoch_start", "epoch_end", "evidence", "event_id", "confidence",
]
# The "Sleep stage X" wording of EDF+ hypnograms (Sleep-EDF, EDFbrowser, MNE's examples).
STAGE_LABELS = {"W": "Sleep stage W", "N1": "Sleep stage N1", "N2": "Sleep stage N2", "N3": "Sleep stage N3", "R": "Sleep stage R"}
EVENT_LABELS = {
    "apnea": "Apnea", "hypopnea": "Hypopnea", "desaturation": "Oxygen Desaturation", "arousal": "Arousal",
    "tachycardia": "Tachycardia", "bradycardia": "Bradycardia", "position_change": "Body Position Change",
    "artefact": "Artifact",
}
EVENTS_PER_PAGE = 38
ANSWER_WRAP_CHARS = 95
ANSWER_LINES_PER_PAGE = 52
A4_INCHES = (8.27, 11.69)


def json_safe(value):
    """JSON-safe copy of nested dicts/lists: numpy scalars to Python, NaN and infinities to None.

    Examples
    --------
    >>> json_safe({"ahi": np.float64(12.5), "t90": float("nan"), "n": [np.int64(3)]})
    {'ahi': 12.5, 't90': None, 'n': [3]}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def events_table(rec: Recording, events: pd.DataFrame | None) -> pd.DataFrame:
    """Events with their time citations, sorted by start.

    Parameters
    ----------
    rec : the night the events were found in.
    events : DataFrame with at least ``kind``, ``start_s``, ``end_s`` (seconds from recording
        start); ``subtype`` and ``evidence`` (dicts) optional. None or empty gives an empty table.

    Returns
    -------
    DataFrame with columns `EVENT_COLUMNS`: kind, subtype, start_s, end_s, duration_s (s),
    clock_start/clock_end ("HH:MM:SS", empty when the file has no start time), elapsed_start
    ("1h02m30s"), epoch_start/epoch_end (inclusive 30-s epoch indices), evidence (the
    detector's measurements as JSON text, empty when none; with ``criteria`` for scored events and
    near-misses, see `sleeplm.measure.events.detect_events`), event_id and confidence (empty when none). An event reaching past the end of
    the recording is cut at the end, so its times, duration and epochs all stay in the night.

    Examples
    --------
    >>> rec = tiny_recording()                                  # starts at 23:00:00
    >>> events = pd.DataFrame({"kind": ["apnea"], "subtype": ["obstructive"], "start_s": [125.0], "end_s": [145.0],
    ...                        "evidence": [{"flow_drop_pct": np.float64(95.0)}]})
    >>> events_table(rec, events).iloc[0].to_dict()
    {'kind': 'apnea', 'subtype': 'obstructive', 'start_s': 125.0, 'end_s': 145.0, 'duration_s': 20.0, 'clock_start': '23:02:05', 'clock_end': '23:02:25', 'elapsed_start': '0h02m05s', 'epoch_start': 4, 'epoch_end': 4, 'evidence': '{"flow_drop_pct": 95.0}', 'event_id': '', 'confidence': None}
    >>> len(events_table(rec, None))
    0
    """
    if events is None or len(events) == 0:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    missing = {"kind", "start_s", "end_s"} - set(events.columns)
    if missing:
        raise ExportError(f"the events table lacks the column(s) {sorted(missing)}; pass detect_events' output.")
    rows = []
    for event in events.sort_values("start_s").itertuples(index=False):
        start, end = (min(max(float(t), 0.0), rec.duration_s) for t in (event.start_s, event.end_s))
        citation = rec.cite(start, end)
        subtype = getattr(event, "subtype", "")
        evidence = getattr(event, "evidence", None)
        rows.append({
            "kind": event.kind,
            "subtype": _text(subtype),
            "start_s": round(start, 2),
            "end_s": round(end, 2),
            "duration_s": round(end - start, 2),
            "clock_start": citation["clock_start"] or "",
            "clock_end": citation["clock_end"] or "",
            "elapsed_start": citation["elapsed_start"],
            "epoch_start": citation["epoch_start"],
            "epoch_end": citation["epoch_end"],
            "evidence": json.dumps(json_safe(evidence), sort_keys=True) if isinstance(evidence, dict) else "",
            "event_id": _text(getattr(event, "event_id", None)),
            "confidence": json_safe(getattr(event, "confidence", None)),
        })
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def _text(value) -> str:
    """A text cell: empty for None or NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def write_events_csv(rec: Recording, events: pd.DataFrame | None, path: str | Path) -> Path:
    """Write `events_table(rec, events)` as CSV (comma-separated, header row) and return the path.

    The one events CSV: the app's ``night-events.csv`` download and ``sleeplm-assistant analyze``'s
    ``events.csv``. Columns `EVENT_COLUMNS`: kind, subtype, start_s, end_s, duration_s, clock_start,
    clock_end, elapsed_start, epoch_start, epoch_end, evidence (JSON text).

    Examples
    --------
    >>> events = pd.DataFrame({"kind": ["hypopnea"], "start_s": [95.0], "end_s": [122.0]})
    >>> path = write_events_csv(tiny_recording(), events, tmp_dir / "events.csv")
    >>> print(path.read_text().splitlines()[1])
    hypopnea,,95.0,122.0,27.0,23:01:35,23:02:02,0h01m35s,3,4,,,
    """
    path = Path(path)
    events_table(rec, events).to_csv(path, index=False)
    return path


def annotation_label(kind: str, subtype: str | None = "") -> str:
    """AASM-style annotation text of an event, e.g. ``"Obstructive Apnea"``, ``"Hypopnea"``.

    Examples
    --------
    >>> annotation_label("apnea", "obstructive"), annotation_label("hypopnea"), annotation_label("desaturation", "3%")
    ('Obstructive Apnea', 'Hypopnea', 'Oxygen Desaturation')
    """
    base = EVENT_LABELS.get(kind, kind.replace("_", " ").title())
    if subtype and isinstance(subtype, str) and kind in ("apnea", "hypopnea"):
        return f"{subtype.title()} {base}"
    return base


def _stage_annotations(hypnogram: np.ndarray) -> list[EdfAnnotation]:
    """One annotation per run of equal stages (unscored "?" epochs are left out)."""
    annotations, run_start = [], 0
    for epoch in range(1, len(hypnogram) + 1):
        if epoch == len(hypnogram) or hypnogram[epoch] != hypnogram[run_start]:
            stage = str(hypnogram[run_start])
            if stage in STAGE_LABELS:
                annotations.append(EdfAnnotation(run_start * EPOCH_SEC, (epoch - run_start) * EPOCH_SEC, STAGE_LABELS[stage]))
            run_start = epoch
    return annotations


def write_annotations_edf(
    rec: Recording, events: pd.DataFrame | None, path: str | Path, hypnogram: np.ndarray | None = None
) -> Path:
    """Write stages and events as an annotations-only EDF+ file.

    Parameters
    ----------
    rec : the night (its start clock becomes the file's start time; midnight when unknown).
    events : DataFrame with ``kind``, ``start_s``, ``end_s`` and optionally ``subtype``.
    path : output file, conventionally ``<name>.annotations.edf`` or ``...-Hypnogram.edf``.
    hypnogram : stage label per 30-s epoch, written as "Sleep stage W/N1/N2/N3/R" runs.

    Returns
    -------
    Path of the written file.

    Raises
    ------
    ExportError : a hypnogram of another length, or nothing (no stages, no events) to write.

    Notes
    -----
    Onsets are seconds from the recording start, so the file lines up with the original
    recording in EDFbrowser or with ``raw.set_annotations(mne.read_annotations(path))``.
    Patient and recording header fields hold the anonymous placeholder "X", and the start
    date the EDF+ "unknown" convention.

    Examples
    --------
    >>> import mne
    >>> rec, analysis = tiny_recording(), tiny_analysis()
    >>> path = write_annotations_edf(rec, analysis.events, tmp_dir / "night.annotations.edf", hypnogram=analysis.staging.hypnogram)
    >>> annotations = mne.read_annotations(path)
    >>> annotations.description[0], float(annotations.onset[0])
    ('Sleep stage W', 0.0)
    >>> sum("Apnea" in d for d in annotations.description) == int((analysis.events["kind"] == "apnea").sum())
    True
    >>> write_annotations_edf(rec, None, tmp_dir / "empty.edf")
    Traceback (most recent call last):
    ...
    sleeplm.errors.ExportError: ...
    """
    path = Path(path)
    annotations = []
    if hypnogram is not None:
        if len(hypnogram) != rec.n_epochs:
            raise ExportError(
                f"the hypnogram has {len(hypnogram)} epochs but the recording {rec.n_epochs}; "
                "pass the hypnogram computed on this recording."
            )
        annotations += _stage_annotations(np.asarray(hypnogram))
    for event in events_table(rec, events).itertuples(index=False):
        annotations.append(EdfAnnotation(event.start_s, event.duration_s, annotation_label(event.kind, event.subtype)))
    if not annotations:
        raise ExportError("there are no sleep stages and no events to write as EDF+ annotations.")
    start = dt.time(0, 0, 0) if rec.start_seconds is None else dt.time(*map(int, rec.clock_at(0).split(":")))
    Edf([], starttime=start, annotations=annotations).write(path)
    logger.info("wrote %d annotations to an EDF+ file", len(annotations))
    return path


# ---- PDF report ------------------------------------------------------------------------------
SUMMARY_ROWS = [
    ("tib_min", "Time in bed (min)"), ("tst_min", "Total sleep time (min)"), ("se_pct", "Sleep efficiency (%)"),
    ("sol_min", "Sleep onset latency (min)"), ("rem_latency_min", "REM latency (min)"), ("waso_min", "Wake after sleep onset (min)"),
    ("N1_pct", "N1 (% of TST)"), ("N2_pct", "N2 (% of TST)"), ("N3_pct", "N3 (% of TST)"), ("R_pct", "REM (% of TST)"),
    ("n_awakenings", "Awakenings"), ("ahi", "AHI (/h)"), ("ahi_rule", "Hypopnea rule"), ("severity", "Severity"),
    ("ahi_supine", "AHI supine (/h)"), ("ahi_nonsupine", "AHI non-supine (/h)"), ("ahi_rem", "AHI REM (/h)"),
    ("ahi_nrem", "AHI NREM (/h)"), ("odi3", "ODI 3% (/h)"), ("odi4", "ODI 4% (/h)"), ("t90_min", "Time SpO2 < 90% (min)"),
    ("spo2_min", "SpO2 minimum (%)"), ("spo2_mean", "SpO2 mean (%)"), ("hr_mean", "Heart rate mean (bpm)"),
    ("n_apneas", "Apneas"), ("n_hypopneas", "Hypopneas"), ("position_min", "Time by body position"),
]


def _shown(value: Any, reason: str | None = None) -> str:
    """A summary value as text; a missing one with the reason it could not be measured."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return textwrap.shorten(f"not assessable: {reason}", 62) if reason else "not assessable"
    if isinstance(value, dict):
        return ", ".join(f"{name} {_shown(minutes)} min" for name, minutes in value.items())
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.1f}"
    return str(value)


def _summary_page(rec: Recording, summary: dict | None, stage_source: str | None) -> Figure:
    fig = Figure(figsize=A4_INCHES)
    fig.text(0.08, 0.95, "SleepLM Assistant: night report", fontsize=16, weight="bold")
    start = rec.clock_at(0) or "unknown"
    facts = (
        f"Recording: {rec.source_format}, {rec.n_epochs} epochs of {EPOCH_SEC} s ({format_elapsed(rec.duration_s)}), "
        f"start {start}. Stages: {stage_source or 'not available'}."
    )
    fig.text(0.08, 0.915, facts, fontsize=9)
    fig.text(0.08, 0.895, "Computed by software, not reviewed by a clinician; not a diagnosis.", fontsize=8, style="italic")
    ax = fig.add_axes((0.08, 0.08, 0.84, 0.78))
    ax.axis("off")
    if not summary:
        ax.text(0, 1, "No night summary was computed for this recording.", va="top", fontsize=10)
        return fig
    reasons = summary.get("not_assessable") or {}
    rows = [[label, _shown(summary.get(key), reasons.get(key))] for key, label in SUMMARY_ROWS
            if key in summary or key in reasons]
    table = ax.table(cellText=rows, colLabels=["Measure", "Value"], loc="upper left", cellLoc="left", colWidths=(0.38, 0.62))
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    return fig


def _figure(value, unit: str = "") -> str:
    return "not available" if value is None else f"{round(value, 2):g}{unit}"


def agreement_lines(agreement: dict) -> list[str]:
    """Markdown lines of `sleeplm.measure.agreement.scoring_agreement`: the staging kappa and confusion
    matrix, event precision/recall per type, AHI and ODI both ways, and what was not compared.

    Examples
    --------
    >>> for line in agreement_lines(tiny_analysis_compared().agreement)[:4]:
    ...     print(line)
    Technician's scoring: EDF+ annotations in the recording.
    <BLANKLINE>
    Staging, 30 epochs staged by both: Cohen's kappa ..., accuracy ... (rows: technician, columns: automatic, yasa).
    <BLANKLINE>
    """
    lines = [f"Technician's scoring: {agreement['technician_scoring']}.", ""] if agreement.get("technician_scoring") else []
    staging = agreement.get("staging")
    if staging is not None and staging["confusion"] is not None:
        lines += [f"Staging, {staging['n_epochs']} epochs staged by both: Cohen's kappa {_figure(staging['kappa'])}, "
                  f"accuracy {_figure(staging['accuracy'])} (rows: technician, columns: automatic, {staging['automatic_source']}).",
                  "", "| technician \\ automatic | " + " | ".join(staging["stages"]) + " |",
                  "|---" * (len(staging["stages"]) + 1) + "|"]
        lines += [f"| {stage} | " + " | ".join(str(n) for n in row) + " |"
                  for stage, row in zip(staging["stages"], staging["confusion"])]
        lines.append("")
    if agreement.get("events"):
        lines += [f"Events matched one-to-one at IoU >= {agreement['min_iou']}:", "",
                  "| type | technician | automatic | matched | missed | extra | precision | recall |", "|---" * 8 + "|"]
        lines += [f"| {kind} | {e['n_technician']} | {e['n_automatic']} | {e['tp']} | {e['fn']} | {e['fp']} | "
                  f"{e['precision']} | {e['recall']} |" for kind, e in agreement["events"].items()]
        lines.append("")
    indices = agreement.get("indices") or {}
    if indices:
        lines += ["Per hour of each scoring's own sleep (the technician's ODI counts their desaturations; "
                  "the automatic one is ODI 3 %):", "", "| index | technician | automatic |", "|---|---|---|"]
        lines += [f"| {key.upper()} | {_figure(v['technician'], '/h')} | {_figure(v['automatic'], '/h')} |" for key, v in indices.items()]
        lines.append("")
    lines += [f"- not compared: {what} ({why})" for what, why in (agreement.get("not_compared") or {}).items()]
    return lines


def _agreement_page(agreement: dict) -> Figure:
    fig = Figure(figsize=A4_INCHES)
    fig.text(0.08, 0.95, "Technician vs automatic scoring", fontsize=12, weight="bold")
    lines = [part for line in agreement_lines(agreement) for part in textwrap.wrap(line, ANSWER_WRAP_CHARS) or [""]]
    for row, text in enumerate(lines[:ANSWER_LINES_PER_PAGE]):
        fig.text(0.08, 0.92 - row * 0.0165, text, fontsize=8, family="monospace")
    return fig


def _event_pages(table: pd.DataFrame) -> Iterable[Figure]:
    columns = ["kind", "subtype", "clock_start", "clock_end", "elapsed_start", "duration_s", "epoch_start", "epoch_end"]
    for page_start in range(0, len(table), EVENTS_PER_PAGE):
        chunk = table.iloc[page_start : page_start + EVENTS_PER_PAGE]
        fig = Figure(figsize=A4_INCHES)
        fig.text(0.08, 0.95, f"Events {page_start + 1}-{page_start + len(chunk)} of {len(table)}", fontsize=12, weight="bold")
        ax = fig.add_axes((0.05, 0.05, 0.9, 0.87))
        ax.axis("off")
        cells = chunk[columns].astype(str).values.tolist()
        grid = ax.table(cellText=cells, colLabels=columns, loc="upper left", cellLoc="left")
        grid.auto_set_font_size(False)
        grid.set_fontsize(7)
        yield fig


def _answer_pages(answers: list[tuple[str, str]]) -> Iterable[Figure]:
    lines: list[tuple[str, bool]] = []
    for question, answer in answers:
        lines += [(line, True) for line in textwrap.wrap(f"Q: {question}", ANSWER_WRAP_CHARS)]
        for paragraph in str(answer).splitlines() or [""]:
            lines += [(line, False) for line in textwrap.wrap(paragraph, ANSWER_WRAP_CHARS) or [""]]
        lines.append(("", False))
    for page_start in range(0, len(lines), ANSWER_LINES_PER_PAGE):
        fig = Figure(figsize=A4_INCHES)
        fig.text(0.08, 0.95, "Questions and cited answers", fontsize=12, weight="bold")
        for row, (text, is_question) in enumerate(lines[page_start : page_start + ANSWER_LINES_PER_PAGE]):
            fig.text(0.08, 0.92 - row * 0.0165, text, fontsize=8, weight="bold" if is_question else "normal", family="monospace")
        yield fig


def write_report_pdf(
    rec: Recording,
    path: str | Path,
    summary: dict | None = None,
    hypnogram: np.ndarray | None = None,
    events: pd.DataFrame | None = None,
    answers: list[tuple[str, str]] | None = None,
    stage_source: str | None = None,
    scorings: dict | None = None,
    agreement: dict | None = None,
) -> Path:
    """Write the night report as a PDF.

    Parameters
    ----------
    rec : the night.
    path : output PDF file.
    summary : `sleeplm.measure.summary.night_summary` dict; its `not_assessable` reasons are listed.
    hypnogram : stage label per 30-s epoch for the overview figure.
    events : detected events (``kind``, ``start_s``, ``end_s``, ``subtype``).
    answers : the chat's (question, answer) pairs, answers as shown (with their citations).
    stage_source : where the stages come from, printed in the header.
    scorings, agreement : when the recording came with scoring and the product's own was compared
        with it (`sleeplm.measure.analysis.NightAnalysis.scorings` and ``.agreement``): the overview
        shows both hypnograms and both event rows, and a page gives the agreement (`agreement_lines`).

    Returns
    -------
    Path of the PDF: page 1 summary, page 2 the overview (stages, events, SpO2), the agreement
    page when given, then the event table and the questions with their answers.

    Examples
    --------
    >>> rec, analysis = tiny_recording(), tiny_analysis()
    >>> pdf = write_report_pdf(rec, tmp_dir / "night.pdf", summary=analysis.summary, hypnogram=analysis.staging.hypnogram,
    ...                        events=analysis.events, answers=[("Any apneas?", "Yes, 3 (23:04:23, 0h04m23s, epoch 8).")],
    ...                        stage_source=analysis.staging.source)
    >>> data = pdf.read_bytes()
    >>> data[:5], data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 3   # summary, overview, tables
    (b'%PDF-', True)
    """
    path = Path(path)
    table = events_table(rec, events)
    with PdfPages(path, metadata={"Title": "SleepLM Assistant night report", "Author": "", "Subject": ""}) as pdf:
        pdf.savefig(_summary_page(rec, summary, stage_source))
        pdf.savefig(plot_night(rec, hypnogram=hypnogram, events=events, stage_source=stage_source, width_in=11.0,
                               comparison=scorings if agreement is not None else None))
        if agreement is not None:
            pdf.savefig(_agreement_page(agreement))
        for page in _event_pages(table):
            pdf.savefig(page)
        for page in _answer_pages(list(answers or [])):
            pdf.savefig(page)
    return path

