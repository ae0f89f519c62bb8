"""Turn the ways people name a moment of the night into inclusive epoch ranges.

Accepted forms (case-insensitive):

- clock times ``"02:30"``, ``"2:30:15"``, ``"2:30 am"``, ``"11pm"``; a clock time after
  midnight belongs to the same night (the recording's start clock is the reference);
- elapsed time from the recording start ``"3h10m"``, ``"3h10m00s"``, ``"45 min"``, ``"+1.5h"``;
- epoch numbers ``"epoch 120"``, ``"epochs 120-140"``, or a bare ``"120"``;
- phrases ``"whole night"``, ``"first half"``, ``"second half"``, ``"first hour"``,
  ``"last 2 hours"``, ``"sleep onset"``, and stage periods such as ``"first REM period"``,
  ``"second N3 period"``, ``"last deep sleep period"`` (need a hypnogram);
- ranges of any two of the above: ``"02:00-03:00"``, ``"from 1h to 2h"``, ``"between epoch 10 and 20"``,
  and open ranges ``"after 02:00"`` (to the end of the night), ``"before 1h"`` (from its start).

Every function returns inclusive 0-based epoch indices and raises `TimeRangeError`
(a `SleepLMError`) with a message that says which forms are accepted.
"""

from __future__ import annotations

import math
import re

import numpy as np

from sleeplm.errors import TimeRangeError
from sleeplm.io.recording import EPOCH_SEC, Recording
from sleeplm.terms import SLEEP_STAGES, format_clock, runs_of

__all__ = ["TimeRangeError", "parse_span", "resolve_range", "stage_periods"]

EpochSpan = tuple[int, int]

# Stage runs closer than this are one "period" (the usual REM-period convention: 15 min).
PERIOD_MERGE_GAP_EPOCHS = 30

ACCEPTED_FORMS = (
    "clock time '02:30', elapsed time '3h10m', 'epoch 120', 'epochs 120-140', "
    "'first half', 'second half', 'first hour', 'last 2 hours', 'sleep onset', "
    "'first REM period', 'second N3 period', or a range 'A to B'"
)

_ORDINALS = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
    "fifth": 4, "5th": 4, "sixth": 5, "6th": 5, "last": -1, "final": -1,
}
_STAGE_WORDS = {
    "rem": "R", "r": "R", "deep": "N3", "deep sleep": "N3", "n3": "N3", "slow wave": "N3",
    "n2": "N2", "n1": "N1", "light": "N1", "wake": "W", "awake": "W", "w": "W",
}

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)?$")
_HOUR_AMPM = re.compile(r"^(\d{1,2})\s*(am|pm|a\.m\.|p\.m\.)$")
_ELAPSED = re.compile(
    r"^\+?\s*(?:(\d+(?:\.\d+)?)\s*h(?:ours?|rs?)?)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in(?:utes?|s)?)?)?"
    r"\s*(?:(\d+(?:\.\d+)?)\s*s(?:ec(?:onds?|s)?)?)?$"
)
_EPOCH = re.compile(r"^(?:epochs?\s*#?\s*)?(\d+)$")
_EPOCH_RANGE = re.compile(r"^epochs?\s*#?\s*(\d+)\s*(?:-|–|to|\.\.|through|and)\s*#?\s*(\d+)$")
_RANGE_SPLIT = re.compile(r"^(?:from\s+|between\s+)?(.+?)\s*(?:\s-\s|-|–|\bto\b|\buntil\b|\band\b|\.\.)\s*(.+)$")
_EDGE_HOURS = re.compile(r"^(first|last)\s+(?:(\d+(?:\.\d+)?)\s+)?hours?(?:\s+of\s+the\s+(?:night|recording))?$")
_HALF = re.compile(r"^(first|second|last)\s+half(?:\s+of\s+the\s+(?:night|recording))?$")
_PERIOD = re.compile(
    r"^(?:the\s+)?(?:(\w+)\s+)?(rem|deep sleep|deep|slow wave|n3|n2|n1|light|wake|awake)\s*"
    r"(?:sleep\s+)?(?:period|episode|cycle|bout)$"
)


def stage_periods(hypnogram: np.ndarray, stage: str, merge_gap: int = PERIOD_MERGE_GAP_EPOCHS) -> list[EpochSpan]:
    """Periods of one stage as inclusive epoch spans.

    Runs of `stage` separated by fewer than `merge_gap` epochs of other stages are one period
    (for REM this is the usual 15-min rule).

    Parameters
    ----------
    hypnogram : array of stage labels per 30-s epoch ("W", "N1", "N2", "N3", "R", "?").
    stage : one of "W", "N1", "N2", "N3", "R".
    merge_gap : largest gap, in epochs, that still joins two runs.

    Returns
    -------
    list of (first_epoch, last_epoch), in time order.
    """
    return runs_of(np.asarray(hypnogram) == stage, max_gap=max(merge_gap - 1, 0))


def _clock_to_epoch(text: str, rec: Recording) -> int:
    match = _CLOCK.match(text) or _HOUR_AMPM.match(text)
    groups = match.groups()
    if len(groups) == 2:  # "11pm"
        hour, minute, second, ampm = int(groups[0]), 0, 0, groups[1]
    else:
        hour, minute, second, ampm = int(groups[0]), int(groups[1]), int(groups[2] or 0), groups[3]
    if ampm:
        if not 1 <= hour <= 12:
            raise TimeRangeError(f"'{text}' is not a valid 12-hour clock time.")
        hour = hour % 12 + (12 if ampm.startswith("p") else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise TimeRangeError(f"'{text}' is not a valid clock time (use HH:MM, 00:00-23:59).")
    if rec.start_seconds is None:
        raise TimeRangeError(
            "This recording carries no start clock time, so clock times cannot be placed; "
            "use elapsed time ('3h10m') or epoch numbers instead."
        )
    # Seconds after the recording start; a time earlier than the start clock is after midnight.
    offset = (hour * 3600 + minute * 60 + second - rec.start_seconds) % 86400
    if offset >= rec.duration_s:
        raise TimeRangeError(
            f"Clock time {text} is outside the recording, which runs from "
            f"{format_clock(rec.start_seconds)} to {format_clock(rec.start_seconds + rec.duration_s)}."
        )
    return int(offset // EPOCH_SEC)


def _elapsed_to_epoch(match: re.Match, text: str, rec: Recording) -> int:
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    offset = hours * 3600 + minutes * 60 + seconds
    if offset >= rec.duration_s:
        raise TimeRangeError(
            f"Elapsed time {text} is past the end of the recording "
            f"({rec.duration_s / 3600:.2f} h, {rec.n_epochs} epochs)."
        )
    return int(offset // EPOCH_SEC)


def _check_epoch(epoch: int, rec: Recording) -> int:
    if not 0 <= epoch < rec.n_epochs:
        raise TimeRangeError(f"Epoch {epoch} is out of range: this night has epochs 0 to {rec.n_epochs - 1}.")
    return epoch


def _stage_period(match: re.Match, text: str, hypnogram: np.ndarray | None) -> EpochSpan:
    ordinal_word, stage_word = match.group(1) or "first", match.group(2)
    if ordinal_word not in _ORDINALS:
        raise TimeRangeError(f"Cannot read '{text}': say 'first', 'second', ... or 'last' period.")
    stage = _STAGE_WORDS[stage_word]
    if hypnogram is None:
        raise TimeRangeError(f"'{text}' needs sleep stages, and none are available for this night.")
    periods = stage_periods(hypnogram, stage)
    index = _ORDINALS[ordinal_word]
    if not periods or index >= len(periods):
        raise TimeRangeError(f"'{text}' does not exist: this night has {len(periods)} {stage} period(s).")
    return periods[index]


def _parse_single(text: str, rec: Recording, hypnogram: np.ndarray | None) -> EpochSpan | None:
    """One expression without a range separator; None when no form matches."""
    n = rec.n_epochs
    if text in {"whole night", "all night", "entire night", "the night", "night", "whole recording", "all"}:
        return 0, n - 1
    if match := _HALF.match(text):
        mid = n // 2
        return (0, max(mid - 1, 0)) if match.group(1) == "first" else (mid, n - 1)
    if match := _EDGE_HOURS.match(text):
        count = max(1, math.ceil(float(match.group(2) or 1) * 3600 / EPOCH_SEC))
        return (0, min(count, n) - 1) if match.group(1) == "first" else (max(n - count, 0), n - 1)
    if text in {"sleep onset", "onset"}:
        if hypnogram is None:
            raise TimeRangeError("'sleep onset' needs sleep stages, and none are available for this night.")
        asleep = np.flatnonzero(np.isin(hypnogram, SLEEP_STAGES))
        if not asleep.size:
            raise TimeRangeError("No sleep was scored in this night, so there is no sleep onset.")
        return int(asleep[0]), int(asleep[0])
    if match := _PERIOD.match(text):
        return _stage_period(match, text, hypnogram)
    if match := _EPOCH_RANGE.match(text):
        return _check_epoch(int(match.group(1)), rec), _check_epoch(int(match.group(2)), rec)
    if match := _EPOCH.match(text):
        epoch = _check_epoch(int(match.group(1)), rec)
        return epoch, epoch
    if _CLOCK.match(text) or _HOUR_AMPM.match(text):
        epoch = _clock_to_epoch(text, rec)
        return epoch, epoch
    if any(ch.isdigit() for ch in text) and (match := _ELAPSED.match(text)):
        epoch = _elapsed_to_epoch(match, text, rec)
        return epoch, epoch
    return None


def parse_span(text: str | int, rec: Recording, hypnogram: np.ndarray | None = None) -> EpochSpan:
    """Read one time expression (a point or a range) as an inclusive epoch span.

    Parameters
    ----------
    text : the expression, e.g. ``"02:30"``, ``"3h10m"``, ``"epoch 120"``, ``"first REM period"``,
        ``"01:00 to 02:00"``; an int is an epoch number.
    rec : the loaded night (start clock and length).
    hypnogram : stage labels per epoch, needed for stage phrases.

    Returns
    -------
    (first_epoch, last_epoch), inclusive, 0-based.

    Examples
    --------
    >>> parse_span("first half", rec)  # doctest: +SKIP
    (0, 119)
    """
    if isinstance(text, (int, np.integer)):
        return _check_epoch(int(text), rec), _check_epoch(int(text), rec)
    cleaned = " ".join(str(text).strip().lower().replace("the night's", "the").split())
    for filler in ("at ", "around ", "about ", "approximately ", "the "):
        cleaned = cleaned.removeprefix(filler)
    if not cleaned:
        raise TimeRangeError(f"Empty time expression. Use {ACCEPTED_FORMS}.")
    # Open ranges: "after 02:00" runs to the end of the night, "before 02:00" from its start.
    for word, to_end in (("after ", True), ("since ", True), ("from ", True), ("before ", False), ("until ", False)):
        if cleaned.startswith(word) and (point := _parse_single(cleaned.removeprefix(word), rec, hypnogram)):
            return (point[0], rec.n_epochs - 1) if to_end else (0, point[1])
    span = _parse_single(cleaned, rec, hypnogram)
    if span is None and (match := _RANGE_SPLIT.match(cleaned)):
        left = _parse_single(match.group(1).strip(), rec, hypnogram)
        right = _parse_single(match.group(2).strip(), rec, hypnogram)
        if left is not None and right is not None:
            span = (left[0], right[1])
    if span is None:
        raise TimeRangeError(f"Cannot read the time '{text}'. Use {ACCEPTED_FORMS}.")
    if span[0] > span[1]:
        raise TimeRangeError(f"'{text}' starts after it ends; give the earlier time first.")
    return span


def resolve_range(
    start: str | int | None,
    end: str | int | None,
    rec: Recording,
    hypnogram: np.ndarray | None = None,
) -> EpochSpan:
    """Inclusive epoch range from optional start and end expressions.

    Neither given: the whole night. Only `start`: its own span (a point is one epoch, a
    phrase such as "first REM period" its whole period). Both: from the start of `start`
    to the end of `end`.

    Raises
    ------
    TimeRangeError
        Unreadable expressions, times outside the night, or a start after the end.
    """
    if start in (None, "") and end in (None, ""):
        return 0, rec.n_epochs - 1
    if start in (None, ""):
        first = 0
    else:
        first, last = parse_span(start, rec, hypnogram)
        if end in (None, ""):
            return first, last
    _, end_last = parse_span(end, rec, hypnogram)
    if first > end_last:
        raise TimeRangeError(
            f"The start ({start}, epoch {first}) is after the end ({end}, epoch {end_last}); "
            "give the earlier time first."
        )
    return first, end_last
