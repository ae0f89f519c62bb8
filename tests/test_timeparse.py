"""Time expressions -> inclusive epoch ranges (tools.timeparse)."""

import numpy as np
import pytest

from tools.timeparse import TimeRangeError, parse_span, resolve_range, stage_periods
from sleeplm.errors import SleepLMError


@pytest.fixture
def night(bare_recording):
    # 4 h starting 23:00:00 -> 480 epochs, ends 03:00:00.
    return bare_recording(n_epochs=480, start_seconds=23 * 3600)


@pytest.fixture
def hypnogram():
    hyp = np.array(["W"] * 480, dtype=object)
    hyp[20:100] = "N2"
    hyp[100:140] = "N3"
    hyp[140:160] = "R"
    hyp[165:170] = "R"  # 5 epochs of N2 gap -> same REM period
    hyp[160:165] = "N2"
    hyp[170:300] = "N2"
    hyp[300:330] = "R"
    return hyp


@pytest.mark.parametrize(
    "text, expected",
    [
        ("23:30", (60, 60)),
        ("23:30:45", (61, 61)),
        ("01:00", (240, 240)),  # after midnight belongs to the night
        ("1:00 am", (240, 240)),
        ("11:30 pm", (60, 60)),
        ("2am", (360, 360)),
        ("3h10m", (380, 380)),
        ("3h10m00s", (380, 380)),
        ("45 min", (90, 90)),
        ("+1.5h", (180, 180)),
        ("epoch 120", (120, 120)),
        ("Epoch 7", (7, 7)),
        ("120", (120, 120)),
        ("epochs 10-20", (10, 20)),
        ("epochs 10 to 20", (10, 20)),
        ("first half", (0, 239)),
        ("second half of the night", (240, 479)),
        ("first hour", (0, 119)),
        ("last 2 hours", (240, 479)),
        ("whole night", (0, 479)),
        ("00:00-01:00", (120, 240)),
        ("from 1h to 2h", (120, 240)),
        ("between epoch 10 and 20", (10, 20)),
        ("after 01:00", (240, 479)),
        ("before 1h", (0, 120)),
        ("around 2:30 am", (420, 420)),
    ],
)
def test_parse_span_forms(night, text, expected):
    assert parse_span(text, night) == expected


def test_stage_phrases(night, hypnogram):
    assert stage_periods(hypnogram, "R") == [(140, 169), (300, 329)]
    assert parse_span("first REM period", night, hypnogram) == (140, 169)
    assert parse_span("the second rem period", night, hypnogram) == (300, 329)
    assert parse_span("last REM period", night, hypnogram) == (300, 329)
    assert parse_span("first deep sleep period", night, hypnogram) == (100, 139)
    assert parse_span("sleep onset", night, hypnogram) == (20, 20)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("04:00", "outside the recording"),
        ("5h", "past the end"),
        ("epoch 480", "out of range"),
        ("25:00", "not a valid clock"),
        ("yesterday", "Cannot read"),
        ("epochs 30-10", "starts after it ends"),
        ("", "Empty"),
    ],
)
def test_bad_expressions_raise_clear_errors(night, text, fragment):
    with pytest.raises(TimeRangeError, match=fragment) as info:
        parse_span(text, night)
    assert isinstance(info.value, SleepLMError)


def test_stage_phrase_without_hypnogram_or_period(night, hypnogram):
    with pytest.raises(TimeRangeError, match="needs sleep stages"):
        parse_span("first REM period", night)
    with pytest.raises(TimeRangeError, match="2 R period"):
        parse_span("third REM period", night, hypnogram)


def test_clock_needs_start_time(bare_recording):
    rec = bare_recording(n_epochs=10, start_seconds=None)
    with pytest.raises(TimeRangeError, match="no start clock"):
        parse_span("01:00", rec)


def test_resolve_range(night, hypnogram):
    assert resolve_range(None, None, night) == (0, 479)
    assert resolve_range("first REM period", None, night, hypnogram) == (140, 169)
    assert resolve_range("23:30", "00:00", night) == (60, 120)
    assert resolve_range(None, "epoch 5", night) == (0, 5)
    with pytest.raises(TimeRangeError, match="after the end"):
        resolve_range("01:00", "00:00", night)
