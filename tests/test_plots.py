"""Night overview and raw-epoch viewer figures on a real loaded EDF+ (conftest `small_edf`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sleeplm.io.reader import load_recording
from sleeplm.report.plots import (
    MAX_VIEW_EPOCHS, STAGE_ORDER, PlotRangeError, plot_epochs, plot_hypnogram, plot_night, reference_events,
    seconds_at_fraction, viewer_channels,
)


@pytest.fixture(scope="module")
def rec(small_edf):
    return load_recording(small_edf)


def test_night_overview_draws_stages_events_and_spo2(rec):
    hypnogram = np.array(["W"] * 10 + ["N2"] * 20 + ["R"] * 10, dtype=object)
    events = pd.DataFrame({"kind": ["apnea", "desaturation"], "start_s": [300.0, 310.0], "end_s": [315.0, 340.0]})
    fig = plot_night(rec, hypnogram=hypnogram, events=events, stage_source="yasa")
    ax_stage, ax_events, ax_spo2 = fig.axes
    assert "yasa" in ax_stage.get_ylabel()
    assert [t.get_text() for t in ax_events.get_yticklabels()] == ["apnea", "desaturation"]
    # SpO2 drawn in % against hours: 1 Hz over 20 min.
    line = ax_spo2.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), rec.signals["SpO2"].data)
    assert line.get_xdata()[-1] == pytest.approx(1199 / 3600)
    assert ax_spo2.get_xticklabels()[0].get_text() == "22:45:00"
    assert ax_spo2.get_xticklabels()[-1].get_text() == "23:05:00"


def test_night_overview_defaults_to_the_files_scored_events(rec):
    events = reference_events(rec)
    assert events[["kind", "subtype", "start_s", "end_s"]].values.tolist() == [["apnea", "obstructive", 300.0, 315.0]]
    fig = plot_night(rec)
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["apnea"]
    assert fig.axes[0].texts[0].get_text() == "no sleep stages available"


def test_hypnogram_of_another_night_is_refused(rec):
    with pytest.raises(PlotRangeError, match="hypnogram has 3 epochs but the recording 40"):
        plot_night(rec, hypnogram=np.array(["W", "W", "W"]))


def test_click_position_maps_to_seconds(rec):
    fig = plot_night(rec)
    box = fig.axes[2].get_position()
    assert seconds_at_fraction(fig, box.x0) == pytest.approx(0.0, abs=1e-6)
    assert seconds_at_fraction(fig, box.x1) == pytest.approx(rec.duration_s)
    assert seconds_at_fraction(fig, box.x0 + box.width / 4) == pytest.approx(rec.duration_s / 4)
    assert seconds_at_fraction(fig, box.x0 / 2) is None  # on the axis labels


def test_epoch_viewer_shows_every_present_channel_in_physical_units(rec):
    names = viewer_channels(rec)
    assert names == ["ECG", "EOG_Left", "EOG_Right", "EEG_C3_A2", "EEG_C4_A1", "EMG_Chin", "SpO2"]
    fig = plot_epochs(rec, 9, 11)
    assert len(fig.axes) == len(names)
    assert fig.axes[3].get_ylabel() == "EEG_C3_A2\n[uV]"
    assert fig.axes[-1].get_ylabel() == "SpO2\n[%]"
    eeg = fig.axes[3].get_lines()[0].get_ydata()
    # 3 epochs at 128 Hz, the file's values in uV (generated with sd 30 uV), not z-scores.
    assert len(eeg) == 3 * 30 * 128
    np.testing.assert_allclose(eeg, rec.signals["EEG_C3_A2"].data[9 * 30 * 128 : 12 * 30 * 128])
    assert 20 < np.std(eeg) < 40
    assert "22:49:30-22:51:00" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "first, last, message",
    [(5, 4, "give the earlier epoch first"), (38, 40, "inside this night"), (0, MAX_VIEW_EPOCHS, "at most 10 epochs")],
)
def test_epoch_viewer_rejects_bad_ranges(rec, first, last, message):
    with pytest.raises(PlotRangeError, match=message):
        plot_epochs(rec, first, last)


def test_night_overview_of_an_epoch_range(rec):
    fig = plot_night(rec, first=10, last=19)
    ax_spo2 = fig.axes[2]
    assert ax_spo2.get_xlim() == pytest.approx((300 / 3600, 600 / 3600))
    assert ax_spo2.get_xticklabels()[0].get_text() == "22:50:00"
    assert seconds_at_fraction(fig, ax_spo2.get_position().x0) == pytest.approx(300.0)
    with pytest.raises(PlotRangeError, match="give the earlier epoch first"):
        plot_night(rec, first=20, last=10)


def test_hypnogram_alone(rec):
    hypnogram = np.array(["W"] * 10 + ["N2"] * 20 + ["R"] * 10, dtype=object)
    fig = plot_hypnogram(rec, hypnogram, "yasa", first=20)
    (ax,) = fig.axes
    assert "yasa" in ax.get_ylabel() and [t.get_text() for t in ax.get_yticklabels()] == list(STAGE_ORDER)
    assert ax.get_xlim() == pytest.approx((600 / 3600, 1200 / 3600))


def test_the_agents_plot_tool_draws_the_same_figures(rec):
    """The `plot` tool's raw figure is the epoch viewer (physical units, every present channel), its events figure the overview."""
    from tools import NightContext, parse_result, run_tool

    hypnogram = np.array(["W"] * 10 + ["N2"] * 20 + ["R"] * 10, dtype=object)
    events = pd.DataFrame({"kind": ["apnea"], "subtype": ["obstructive"], "start_s": [300.0], "end_s": [315.0]})
    analysis = SimpleNamespace(events=events, staging=SimpleNamespace(hypnogram=hypnogram, source="yasa", agreement=None))
    night = NightContext(rec=rec, analysis=analysis)
    raw = run_tool("plot", {"kind": "raw", "start": "epoch 9", "end": "epoch 11"}, night)
    assert raw.status == "success", raw.content
    assert [ax.get_ylabel().split("\n")[0] for ax in raw.artifact.axes] == viewer_channels(rec)
    eeg = raw.artifact.axes[3].get_lines()[0].get_ydata()
    np.testing.assert_allclose(eeg, rec.signals["EEG_C3_A2"].data[9 * 30 * 128 : 12 * 30 * 128])  # uV, not z-scores
    assert "22:49:30" in raw.artifact._suptitle.get_text()
    too_long = run_tool("plot", {"kind": "raw", "start": "epoch 0", "end": "epoch 20"}, night)
    assert too_long.status == "error" and "at most 10 epochs" in too_long.content
    overview = run_tool("plot", {"kind": "events", "start": "epoch 5", "end": "epoch 14"}, night)
    ax_stage, ax_events, ax_spo2 = overview.artifact.axes
    assert [t.get_text() for t in ax_events.get_yticklabels()] == ["apnea"]
    assert ax_spo2.get_ylabel() == "SpO2 (%)" and ax_spo2.get_xlim() == pytest.approx((150 / 3600, 450 / 3600))
    assert parse_result(overview.content)["range"]["epoch_start"] == 5
    hypno = run_tool("plot", {"kind": "hypnogram"}, night)
    assert hypno.status == "success" and len(hypno.artifact.axes) == 1
