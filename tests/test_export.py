"""Exports of a night: events CSV, annotations-only EDF+, PDF report, tool trace JSON."""

from __future__ import annotations

import json
import re
import zlib

import mne
import numpy as np
import pandas as pd
import pytest

from sleeplm.report.export import (
    EVENT_COLUMNS, ExportError, annotation_label, events_table, write_annotations_edf, write_events_csv,
    write_report_pdf,
)
from assistant.trace import write_trace_json
from sleeplm.io.reader import load_recording

EVENTS = pd.DataFrame({
    "kind": ["hypopnea", "apnea", "desaturation"],
    "subtype": [None, "obstructive", ""],
    "start_s": [600.0, 300.0, 310.0],
    "end_s": [620.0, 315.0, 340.0],
    "evidence": [{"drop_pct": 40}, {"drop_pct": 95}, {"nadir_pct": 86}],
})
HYPNOGRAM = np.array(["W"] * 10 + ["N2"] * 20 + ["R"] * 9 + ["?"], dtype=object)


@pytest.fixture(scope="module")
def rec(small_edf):
    return load_recording(small_edf)  # 40 epochs from 22:45:00


def pdf_text(path) -> str:
    """Text drawn in a matplotlib PDF: the literal strings of its (kerned) TJ/Tj operators, one line each."""
    data = path.read_bytes()
    lines = []
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:
            continue
        for op in re.finditer(rb"\[(.*?)\]\s*TJ|\((.*?)\)\s*Tj", content, re.S):
            pieces = re.findall(rb"\(((?:\\.|[^\\)])*)\)", op.group(1)) if op.group(1) is not None else [op.group(2)]
            lines.append(b"".join(pieces).decode("latin-1").replace("\\(", "(").replace("\\)", ")"))
    return "\n".join(lines)


def test_events_table_cites_clock_elapsed_and_epochs(rec):
    table = events_table(rec, EVENTS)
    assert list(table.columns) == EVENT_COLUMNS
    first = table.iloc[0]
    assert (first.kind, first.subtype, first.clock_start, first.clock_end) == ("apnea", "obstructive", "22:50:00", "22:50:15")
    assert (first.elapsed_start, first.epoch_start, first.epoch_end, first.duration_s) == ("0h05m00s", 10, 10, 15.0)
    assert table["kind"].tolist() == ["apnea", "desaturation", "hypopnea"]  # sorted by start
    assert table.iloc[1].epoch_end == 11  # 310-340 s crosses into epoch 11
    assert table.iloc[2].subtype == ""


def test_events_csv_round_trips(rec, tmp_path):
    path = write_events_csv(rec, EVENTS, tmp_path / "events.csv")
    back = pd.read_csv(path, keep_default_na=False)
    assert back["clock_start"].tolist() == ["22:50:00", "22:50:10", "22:55:00"]
    assert back["epoch_start"].tolist() == [10, 10, 20]
    empty = pd.read_csv(write_events_csv(rec, None, tmp_path / "none.csv"))
    assert list(empty.columns) == EVENT_COLUMNS and empty.empty


def test_events_without_times_are_refused(rec):
    with pytest.raises(ExportError, match=r"lacks the column\(s\) \['end_s'\]"):
        events_table(rec, pd.DataFrame({"kind": ["apnea"], "start_s": [1.0]}))


def test_annotations_edf_is_read_back_by_mne(rec, tmp_path):
    path = write_annotations_edf(rec, EVENTS, tmp_path / "night.annotations.edf", hypnogram=HYPNOGRAM)
    annotations = mne.read_annotations(path)
    got = sorted(zip(annotations.onset.round(2), annotations.duration.round(2), annotations.description))
    assert got == [
        (0.0, 300.0, "Sleep stage W"),
        (300.0, 15.0, "Obstructive Apnea"),
        (300.0, 600.0, "Sleep stage N2"),
        (310.0, 30.0, "Oxygen Desaturation"),
        (600.0, 20.0, "Hypopnea"),
        (900.0, 270.0, "Sleep stage R"),  # the unscored last epoch is left out
    ]
    header = path.read_bytes()[:256].decode("latin-1")
    assert header[8:88].split() == ["X", "X", "X", "X"]  # anonymous patient field
    assert header[176:184] == "22.45.00"


def test_annotations_edf_refuses_a_hypnogram_of_another_night(rec, tmp_path):
    with pytest.raises(ExportError, match="hypnogram has 2 epochs but the recording 40"):
        write_annotations_edf(rec, EVENTS, tmp_path / "x.edf", hypnogram=np.array(["W", "W"]))


def test_annotations_edf_with_nothing_to_write_says_so(rec, tmp_path):
    with pytest.raises(ExportError, match="no sleep stages and no events"):
        write_annotations_edf(rec, None, tmp_path / "x.edf", hypnogram=np.array(["?"] * 40))
    assert not (tmp_path / "x.edf").exists()


def test_annotation_labels():
    assert annotation_label("apnea", "central") == "Central Apnea"
    assert annotation_label("hypopnea", "") == "Hypopnea"
    assert annotation_label("desaturation", "whatever") == "Oxygen Desaturation"
    assert annotation_label("leg_movement") == "Leg Movement"


def test_report_pdf_holds_summary_events_and_answers(rec, tmp_path):
    answers = [("When did respiration look abnormal?", "An obstructive apnea at 22:50:00-22:50:15 (epoch 10).")]
    summary = {"tst_min": 300.0, "ahi": 5.25, "severity": "mild", "hr_mean": None, "position_min": {"Supine": 100.0},
               "not_assessable": {"hr_mean": "no ECG channel"}}
    path = write_report_pdf(rec, tmp_path / "report.pdf", summary=summary, hypnogram=HYPNOGRAM, events=EVENTS,
                            answers=answers, stage_source="yasa")
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b", data)) == 4
    text = pdf_text(path)
    for expected in ("night report", "Total sleep time (min)", "300.0", "AHI (/h)", "5.2", "mild", "not assessable: no ECG channel", "Supine 100.0 min",
                     "Events 1-3 of 3", "obstructive", "22:50:00", "When did respiration look abnormal?",
                     "epoch 10", "Stages: yasa"):
        assert expected in text, expected


def test_report_pdf_without_analysis_says_so(rec, tmp_path):
    text = pdf_text(write_report_pdf(rec, tmp_path / "bare.pdf"))
    assert "No night summary was computed for this recording." in text
    assert "Events" not in text


def test_trace_json(tmp_path):
    turns = [{"question": "q", "answer": "a", "tool_calls": [{"name": "list_events", "args": {"kind": "apnea"},
                                                             "result": {"count": np.int64(3)}}]}]
    back = json.loads(write_trace_json(turns, tmp_path / "trace.json").read_text())
    assert back["turns"][0]["tool_calls"][0]["result"]["count"] == 3


def test_event_past_the_end_is_cut_at_the_end_in_every_column(rec):
    """A 20-s event starting 10 s before the end: its clock, elapsed time, duration and epochs all stop at the end."""
    end = rec.duration_s  # 40 epochs from 22:45:00: ends 23:05:00
    late = pd.DataFrame({"kind": ["apnea"], "start_s": [end - 10.0], "end_s": [end + 10.0]})
    row = events_table(rec, late).iloc[0]
    assert (row.end_s, row.duration_s, row.clock_end, row.epoch_end) == (end, 10.0, "23:05:00", rec.n_epochs - 1)
    after = events_table(rec, pd.DataFrame({"kind": ["apnea"], "start_s": [end + 5.0], "end_s": [end + 20.0]})).iloc[0]
    assert (after.clock_start, after.elapsed_start, after.epoch_start, after.duration_s) == ("23:05:00", "0h20m00s", 39, 0.0)


def test_one_events_csv_for_the_app_and_analyze(rec, tmp_path):
    """`analyze --out` writes the same table as the app's download, evidence as JSON text."""
    from sleeplm.report import analyze_dir

    assert analyze_dir.write_events_csv is write_events_csv  # one function, not two
    back = pd.read_csv(write_events_csv(rec, EVENTS, tmp_path / "events.csv"), keep_default_na=False)
    assert list(back.columns) == EVENT_COLUMNS
    assert [json.loads(e) for e in back["evidence"]] == [{"drop_pct": 95}, {"nadir_pct": 86}, {"drop_pct": 40}]
