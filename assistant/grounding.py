"""Check that every number and time in an answer came from that turn's tool results.

An answer passes when each figure it states (plain numbers, percentages, clock times,
elapsed times) can be found among the figures of the tool results, allowing for formatting
("23.4" vs 23.40, "02:30" vs "02:30:00", "3h10m" vs "3h10m00s", "2:30 am") and for rounding
to the precision the answer shows ("23" or "23.5" for 23.46). Counts and durations written as
words ("two apneas", "three hours", "twenty-one events", "twice") are figures too. A duration
("3 hours", "190 min", "3h10m") also matches a tool's duration in another unit (``tst_min:
185`` or "185 min"), rounded to the unit the answer uses. Unmatched figures are reported so the
session can flag them to the user.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from sleeplm.terms import parse_citations

__all__ = ["Figure", "Grounding", "extract_figures", "collect_tool_figures", "check_grounding", "grounding_note",
           "complete_citations"]

# Clock times "02:30", "2:30:15", optionally "am"/"pm" (whole hours "2 am": `_HOUR`).
_CLOCK = r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])(?:\s*([ap])\.?m\.?\b)?"
# Elapsed times "3h10m", "3h10m00s", "3 h 10 min", "3 hours and 10 minutes" (hours and minutes both present).
_ELAPSED = (
    r"(?<![\w.])(\d+)\s*h(?:ours?|rs?)?\s*,?\s*(?:and\s+)?(\d{1,2})\s*m(?:in(?:utes?|s)?)?"
    r"(?:\s*(\d{1,2})\s*s(?:ec(?:onds?|s)?)?)?(?![a-z])"
)
# Plain numbers not glued to letters (so "N3", "SpO2", "T90", "1A" are names, not figures).
_NUMBER = r"(?<![\w.])(\d+(?:,\d{3})*(?:\.\d+)?)(?![\w]|\.\d)"
# Spelled-out counts: "two", "seventeen", "twenty-one", "forty five".
_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
WORD_VALUES = {word: i for i, word in enumerate(_UNITS)} | {word: 20 + 10 * i for i, word in enumerate(_TENS)} | {"twice": 2}
_WORD_NUMBER = rf"(?<![\w-])(?:(?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(_UNITS[1:10])}))?|{'|'.join(_UNITS)}|twice)(?![\w-])"
# A spelled-out word is a figure only before something counted or measured ("two apneas",
# "three obstructive apneas", "woke up twice"), so "one of them" or "at one point" are prose.
_COUNTED = (
    r"(?:hours?|hrs?|minutes?|mins?|seconds?|secs?|times?|events?|apn(?:o)?eas?|hypopn(?:o)?eas?|desaturations?|"
    r"arousals?|awakenings?|episodes?|periods?|epochs?|cycles?|breaths?|drops?|dips?|pauses?|percent|beats?|"
    r"changes?|spells?|occasions?|stretches?)"
)
_WORDS = rf"(?P<word>{_WORD_NUMBER})(?=(?:\s+[a-z]+)?\s+{_COUNTED}\b|(?<=twice))"
# Durations: a number followed by a time unit (seconds per unit).
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_UNIT_AFTER = re.compile(r"\s*(?:(h)(?:ours?|rs?)?|(m)(?:in(?:ute)?s?)|(s)(?:ec(?:ond)?s?)?)(?![a-z])", re.IGNORECASE)
# A number glued to its time unit ("3h", "45min", "30s"); "3h10m" is an elapsed time, matched first.
_GLUED = r"(?<![\w.])(\d+(?:\.\d+)?)(?=(?:h|hrs?|hours?|mins?|minutes?|s|secs?|seconds?)(?![a-z]))"
# Whole hours on the clock: "2 am", "11pm", "2 a.m.".
_HOUR = r"(?<![\w.:])(?P<hour>\d{1,2})\s*(?P<half>[ap])\.?m\b"
_PATTERN = re.compile(
    rf"(?P<clock>{_CLOCK})|{_HOUR}|(?P<elapsed>{_ELAPSED})|(?P<glued>{_GLUED})|(?P<number>{_NUMBER})|{_WORDS}",
    re.IGNORECASE,
)
# Tool-result keys that carry a duration, by unit suffix.
_KEY_UNITS = {"_min": 60.0, "minutes": 60.0, "_s": 1.0, "_h": 3600.0}
# Markdown list markers "1." / "2)" at a line start are layout, not figures.
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)


@dataclass(frozen=True)
class Figure:
    """One figure found in text.

    Attributes
    ----------
    text : as written, e.g. ``"02:30"``.
    kind : "clock" (value in seconds of the day), "elapsed" (seconds) or "number".
    value : normalised value.
    step : resolution implied by the writing (1 s for "02:30:15", 60 s for "02:30",
        0.1 for "23.4", 1 for "23").
    seconds : for a number that is a duration ("3 hours", "61.0 min", a ``*_min`` key), its
        length in seconds; None otherwise.
    seconds_step : resolution of `seconds` (3600 s for "3 hours", 6 s for "61.0 min").
    """

    text: str
    kind: str
    value: float
    step: float
    seconds: float | None = None
    seconds_step: float = 0.0


@dataclass
class Grounding:
    """Result of a grounding check: figures matched and not matched to tool results."""

    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unmatched

    def to_dict(self) -> dict:
        return asdict(self)


def _clock_figure(match: re.Match, offset: int) -> Figure:
    hour, minute, second, ampm = (match.group(offset + i) for i in range(4))
    hour, minute = int(hour), int(minute)
    if ampm:
        hour = hour % 12 + (12 if ampm.lower() == "p" else 0)
    value = hour * 3600 + minute * 60 + int(second or 0)
    return Figure(match.group(0).strip(), "clock", float(value), 1.0 if second else 60.0)


def _elapsed_figure(match: re.Match, offset: int) -> Figure:
    hours, minutes, seconds = (match.group(offset + i) for i in range(3))
    value = int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
    return Figure(match.group(0).strip(), "elapsed", float(value), 1.0 if seconds else 60.0)


def _number_figure(text: str, unit_s: float | None = None) -> Figure:
    plain = text.replace(",", "")
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    step = 10.0**-decimals
    if unit_s is None:
        return Figure(text, "number", float(plain), step)
    return Figure(text, "number", float(plain), step, float(plain) * unit_s, step * unit_s)


def _word_value(word: str) -> int:
    parts = re.split(r"[- ]", word.lower())
    return sum(WORD_VALUES[part] for part in parts)


def _unit_after(text: str, end: int) -> float | None:
    """Seconds per unit of a time unit written right after position `end` ("h", "min", "seconds"...)."""
    unit = _UNIT_AFTER.match(text, end)
    if unit is None:
        return None
    return _DURATION_UNITS[next(g for g in unit.groups() if g).lower()]


def extract_figures(text: str) -> list[Figure]:
    """Every clock time, elapsed time and number written in `text`, in order.

    Parameters
    ----------
    text : free text (an answer, or a tool's findings).

    Returns
    -------
    list of Figure.
    """
    text = _LIST_MARKER.sub(" ", text)
    clock_at = _PATTERN.groupindex["clock"] + 1
    elapsed_at = _PATTERN.groupindex["elapsed"] + 1
    figures = []
    for match in _PATTERN.finditer(text):
        if match.group("clock"):
            figures.append(_clock_figure(match, clock_at))
        elif match.group("hour"):
            hour = int(match.group("hour")) % 12 + (12 if match.group("half").lower() == "p" else 0)
            figures.append(Figure(match.group(0).strip(), "clock", float(hour * 3600), 3600.0))
        elif match.group("elapsed"):
            figures.append(_elapsed_figure(match, elapsed_at))
        elif match.group("number") or match.group("glued"):
            written = match.group("number") or match.group("glued")
            figures.append(_number_figure(written, _unit_after(text, match.end())))
        elif match.group("word"):
            unit_s = _unit_after(text, match.end())
            value = _word_value(match.group("word"))
            seconds = None if unit_s is None else value * unit_s
            figures.append(Figure(match.group("word"), "number", float(value), 1.0, seconds, unit_s or 0.0))
    return figures


def _key_unit(key: Any) -> float | None:
    """Seconds per unit of a result key named with a duration unit ("tst_min", "duration_s", "minutes")."""
    key = str(key)
    # "spo2_min" is a lowest saturation and "events_per_h" a rate, not durations.
    if "per_" in key or key.startswith(("spo2", "hr")):
        return None
    return next((unit for suffix, unit in _KEY_UNITS.items() if key.endswith(suffix)), None)


def _walk(value: Any, unit_s: float | None = None) -> Iterable[Figure]:
    """Figures of a tool result: numeric leaves as exact numbers (durations when their key names a
    time unit), strings parsed for figures."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if value == value:  # NaN is never a figure
            yield Figure(repr(value), "number", abs(float(value)), 0.0, seconds=abs(float(value)) * unit_s if unit_s else None)
    elif isinstance(value, str):
        try:
            decoded = json.loads(value)
        except (ValueError, TypeError):
            decoded = None
        if isinstance(decoded, (dict, list)):
            yield from _walk(decoded)
        else:
            yield from extract_figures(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, _key_unit(key))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)


def collect_tool_figures(tool_results: Iterable[Any]) -> list[Figure]:
    """All figures in a turn's tool results (dicts, lists, JSON strings or text)."""
    return [figure for result in tool_results for figure in _walk(result)]


def _same_duration(answer_s: float, step_s: float, source: Figure) -> bool:
    """A duration written in the answer against a source duration (elapsed time or number with a unit)."""
    source_s = source.value if source.kind == "elapsed" else source.seconds
    return source_s is not None and abs(source_s - answer_s) <= step_s / 2 + 1e-9


def _same(answer: Figure, source: Figure) -> bool:
    """True when `answer` is `source` written at the answer's precision."""
    if answer.kind == "number":
        if answer.seconds is not None:  # "3 hours" must be a duration, not any 3 in the results
            return _same_duration(answer.seconds, answer.seconds_step, source)
        # Rounding to the shown precision, either direction of a half-step.
        return source.kind == "number" and abs(answer.value - source.value) <= answer.step / 2 + 1e-9
    if answer.kind == "elapsed" and source.kind == "number":
        return _same_duration(answer.value, answer.step, source)
    if answer.kind != source.kind:
        return False
    if answer.kind == "clock":
        diff = (source.value - answer.value) % 86400
        # "02:30" stands for 02:30:00-02:30:59 (truncation) or a rounded minute.
        return diff < answer.step or (86400 - diff) <= answer.step / 2
    diff = source.value - answer.value
    return -answer.step / 2 <= diff < answer.step


def check_grounding(answer: str, tool_results: Iterable[Any]) -> Grounding:
    """Match every figure of `answer` against the figures of `tool_results`.

    Parameters
    ----------
    answer : the text shown to the user.
    tool_results : this turn's tool outputs (dicts or strings).

    Returns
    -------
    Grounding with the matched and unmatched figures as written in the answer.

    Examples
    --------
    >>> check_grounding("AHI 23 at 02:30", [{"ahi": 23.4, "clock_start": "02:30:00"}]).unmatched
    []
    """
    sources = collect_tool_figures(tool_results)
    report = Grounding()
    for figure in extract_figures(answer):
        matched = any(_same(figure, source) for source in sources)
        (report.matched if matched else report.unmatched).append(figure.text)
    return report


def grounding_note(report: Grounding) -> str:
    """The note appended to an answer whose figures could not all be verified ('' when none)."""
    if report.ok:
        return ""
    listed = ", ".join(dict.fromkeys(report.unmatched))
    return (
        "\n\nNote: these figures in the answer were not found in the tool results and may be "
        f"wrong: {listed}. Ask again or check the tool results."
    )


def complete_citations(answer: str, tool_results: Iterable[Any]) -> str:
    """Add the elapsed time and epochs after each clock range of `answer` that a tool cited.

    Answers cite clock time, elapsed time and epochs; small models often keep only the clock
    range. A range is completed only when a tool result gives that exact range, so nothing is
    made up; a range already followed by its citation is left alone.
    """
    known = {}
    for result in tool_results:
        text = result if isinstance(result, str) else json.dumps(result)
        for citation in parse_citations(text):
            if citation["clock_start"] is not None:
                span = f"{citation['clock_start']}-{citation['clock_end']}"
                known[span] = citation["text"][len(span) + 1:]
    if not known:
        return answer

    def add(match: re.Match) -> str:
        span = match.group(1)
        return f"{span} {known[span]}" if span in known else span

    return re.sub(r"(\d\d:\d\d:\d\d-\d\d:\d\d:\d\d)(?! \(elapsed)", add, answer)
