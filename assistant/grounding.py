"""Check that every figure in an answer came from that turn's tool results, with the same meaning.

Each figure of an answer (plain numbers, percentages, durations, clock and elapsed times, epochs,
counts written as words, AASM severity bands) is read together with what it is said to be: its
quantity (a count, a rate per hour, a percentage, a duration, a heart rate, a clock time, an
elapsed time, an epoch) and its subject (apneas, AHI, ODI, sleep efficiency, TST, REM, SpO2...),
taken from its unit and the nearest words of its clause. Tool results are read into typed
`Fact` models (pydantic): each numeric field gets the quantity, subject, unit and time range its
field name defines (`FIELD_MEANINGS`), and the findings sentences are read like an answer.

A figure is verified when a fact of a compatible meaning has its value at the precision the
answer shows ("23" or "23.5" for 23.46; "3 hours" for 185 min). "67 apneas" therefore needs an
apnea count of 67, not an epoch 67; "AHI of 20" an AHI of 20, not a 20-s event; "at 02:14" a
cited time there; "REM 20 % of the time in bed" a REM percentage of time in bed, not of TST.
Unverified figures are reported with the meaning that was looked for, so the session can replace
the answer and say which claims failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable

from pydantic import BaseModel

from sleeplm.terms import format_citation, parse_citations, parse_clock_ranges

__all__ = ["Figure", "Fact", "Grounding", "FIELD_MEANINGS", "extract_figures", "collect_tool_figures", "result_facts",
           "check_grounding", "complete_citations"]

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
# Markdown list markers "1." / "2)" at a line start are layout, not figures.
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)



# ---- meanings ---------------------------------------------------------------------------------
# Quantities: "clock", "elapsed", "epoch", "duration", "percent", "rate", "count", "bpm",
# "severity", or "number" (nothing in the text says what it is).
# Subjects named near a figure, most specific first (a tie in distance goes to the earlier one).
_SUBJECTS: list[tuple[str, str]] = [
    (r"\bahi\b|apn(?:o)?ea[- ]hypopn(?:o)?ea index|breathing pauses and shallow breathing", "ahi"),
    (r"\bodi ?\d?\b|oxygen desaturation index", "odi"),
    (r"\brei\b|respiratory event index", "rei"),
    (r"\brem latency\b|latency to rem", "rem_latency"),
    (r"\befficien", "se"),
    (r"fall(?:ing)? asleep|sleep onset|sleep latency|\bsol\b", "sol"),
    (r"\bwaso\b|awake after|wake after sleep onset", "waso"),
    (r"\bt90\b|below 90 ?%", "t90"),
    (r"\btotal sleep\b|\btst\b|\bslept\b|\bsleep time\b", "tst"),
    (r"\bin bed\b|\btib\b|\brecording lasts?\b|\bthe recording\b", "tib"),
    (r"\brem\b|dream sleep|\brapid eye", "stage:R"),
    (r"\bn3\b|deep sleep|slow[- ]wave", "stage:N3"),
    (r"\bn2\b", "stage:N2"),
    (r"\bn1\b", "stage:N1"),
    (r"\bspo2\b|\boxygen\b|saturation|\bsao2\b", "spo2"),
    (r"heart rate|\bpulse\b|\bhr\b", "hr"),
]
_SUBJECT_RES = [(re.compile(pattern, re.IGNORECASE), subject) for pattern, subject in _SUBJECTS]
# What a count counts, read from the words right after it ("67 apneas", "3 breathing pauses").
_COUNTED_SUBJECTS: list[tuple[str, str | None]] = [
    (r"(?:obstructive |central |mixed )?apn(?:o)?eas?|breathing pauses?", "apnea"),
    (r"hypopn(?:o)?eas?|shallow breath(?:s|ing)?", "hypopnea"),
    (r"respiratory events?|breathing (?:events|problems)", "respiratory"),
    (r"(?:oxygen )?desaturations?|oxygen (?:drops?|dips?)|drops?|dips?", "desaturation"),
    (r"brief awakenings?|arousals?", "arousal"),
    (r"awakenings?|times", "awakening"),
    (r"periods?|clusters?", "period"),
    (r"(?:\w+ )?events?|episodes?|epochs? of|occasions?|spells?", None),
]
_COUNTED_RE = [(re.compile(rf"\s+(?:[a-z-]+\s+)?(?:{pattern})\b", re.IGNORECASE), subject) for pattern, subject in _COUNTED_SUBJECTS]
_RATE_AFTER = re.compile(r"\s*(?:events?|times|apn\w*|pauses?|drops?|breaths?)?\s*(?:/\s*h\b|/\s*hr\b|per hour|an hour|each hour|every hour|/hour)", re.IGNORECASE)
_PERCENT_AFTER = re.compile(r"\s*(?:%|percent\b)")
_BPM_AFTER = re.compile(r"\s*(?:bpm\b|beats? (?:per|a|each) minute)", re.IGNORECASE)
_EPOCH_BEFORE = re.compile(r"\bepochs?\s*(?:\d+\s*(?:-|to|and)\s*)?$", re.IGNORECASE)
_ELAPSED_CONTEXT = re.compile(r"\belapsed\b|\binto (?:the|your) (?:night|recording|sleep)\b|\bafter (?:the )?(?:start|lights)|\bfrom the start\b", re.IGNORECASE)
_TIB_BASE = re.compile(r"of (?:the |your )?(?:time in bed|tib\b|recording|whole night|night)", re.IGNORECASE)
_TST_BASE = re.compile(r"of (?:the |your )?(?:total )?(?:sleep|tst\b|time asleep|sleep time)", re.IGNORECASE)
_SEVERITY = re.compile(r"\b(normal|mild|moderate|severe)\b", re.IGNORECASE)
_SEVERITY_TOPIC = re.compile(r"\bahi\b|sleep apn|\bstudy\b|\bband\b|severity|\bosa\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.;!?\n]|,\s")
CONTEXT_CHARS = 40
SEVERITY_VALUES = {"normal": 0.0, "mild": 1.0, "moderate": 2.0, "severe": 3.0}


@dataclass(frozen=True)
class Figure:
    """One figure found in text, with what the text says it is.

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
    quantity : what kind of figure it is (see the module notes), "number" when unknown.
    subject : what it is about ("apnea", "ahi", "stage:R", "spo2"...), None when unknown.
    base : for a percentage, what it is a percentage of ("tst" or "tib"), None when unsaid.
    """

    text: str
    kind: str
    value: float
    step: float
    seconds: float | None = None
    seconds_step: float = 0.0
    quantity: str = "number"
    subject: str | None = None
    base: str | None = None

    @property
    def meaning(self) -> str:
        """Readable meaning, e.g. "count of apnea", "rate (ahi)", "percent of tib (stage:R)"."""
        words = {"count": "count", "rate": "rate per hour", "percent": "percentage", "duration": "duration",
                 "bpm": "heart rate", "clock": "clock time", "elapsed": "elapsed time", "epoch": "epoch",
                 "elapsed_or_duration": "elapsed time or duration",
                 "severity": "severity band", "number": "number"}[self.quantity]
        detail = ", ".join(part for part in (self.subject, f"of {self.base.upper()}" if self.base else None) if part)
        return f"{words} ({detail})" if detail else words


class Fact(BaseModel):
    """One number of a tool result with its meaning (the typed form the grounding check matches against).

    Attributes
    ----------
    field : result field it comes from ("ahi", "n_apneas", "findings"...).
    quantity, subject, base : as in `Figure`.
    unit : "events/h", "min", "s", "%", "bpm", "epoch", "clock", "elapsed", "" (none).
    value : the number (seconds of the day for clock times, seconds for elapsed times).
    seconds : the duration in seconds, for durations.
    epoch_start, epoch_end : the time range the number belongs to, when the result gives one.
    """

    field: str
    quantity: str
    subject: str | None = None
    base: str | None = None
    unit: str = ""
    value: float
    step: float = 0.0
    seconds: float | None = None
    epoch_start: int | None = None
    epoch_end: int | None = None


# Result fields -> (quantity, subject, base, unit). Other fields are read by their suffix.
_STAGE_KEYS = {f"{stage}_{suffix}": ("duration" if suffix == "min" else "percent", f"stage:{stage}",
                                     None if suffix == "min" else ("tib" if stage == "W" else "tst"), suffix.replace("pct", "%"))
               for stage in ("W", "N1", "N2", "N3", "R") for suffix in ("min", "pct")}
FIELD_MEANINGS: dict[str, tuple[str, str | None, str | None, str]] = {
    **{key: ("rate", "ahi", None, "events/h") for key in ("ahi", "ahi_supine", "ahi_nonsupine", "ahi_rem", "ahi_nrem")},
    "rei": ("rate", "rei", None, "events/h"), "odi3": ("rate", "odi", None, "events/h"), "odi4": ("rate", "odi", None, "events/h"),
    "n_apneas": ("count", "apnea", None, ""), "n_hypopneas": ("count", "hypopnea", None, ""),
    "n_awakenings": ("count", "awakening", None, ""), "respiratory_events": ("count", "respiratory", None, ""),
    "desaturations": ("count", "desaturation", None, ""), "arousals": ("count", "arousal", None, ""),
    "n_periods": ("count", "period", None, ""), "count": ("count", None, None, ""), "n_events": ("count", None, None, ""),
    "listed": ("count", None, None, ""), "n_spans": ("count", None, None, ""),
    "apnea": ("count", "apnea", None, ""), "hypopnea": ("count", "hypopnea", None, ""),
    "desaturation": ("count", "desaturation", None, ""), "arousal": ("count", "arousal", None, ""),
    "tachycardia": ("count", None, None, ""), "bradycardia": ("count", None, None, ""),
    "tst_min": ("duration", "tst", None, "min"), "tib_min": ("duration", "tib", None, "min"), "spt_min": ("duration", None, None, "min"),
    "sol_min": ("duration", "sol", None, "min"), "rem_latency_min": ("duration", "rem_latency", None, "min"),
    "waso_min": ("duration", "waso", None, "min"), "t90_min": ("duration", "t90", None, "min"),
    "duration_h": ("duration", "tib", None, "h"), "gap_min": ("duration", None, None, "min"),
    **_STAGE_KEYS,
    "se_pct": ("percent", "se", None, "%"),
    **{key: ("percent", "spo2", None, "%") for key in ("spo2_min", "spo2_mean", "spo2_min_pct", "spo2_mean_pct", "nadir_pct",
                                                       "baseline_pct", "drop_pct")},
    **{key: ("bpm", "hr", None, "bpm") for key in ("hr_mean", "hr_mean_bpm", "hr_min_bpm", "hr_extreme_bpm")},
    "epoch_start": ("epoch", None, None, "epoch"), "epoch_end": ("epoch", None, None, "epoch"),
    "epochs": ("epoch", None, None, "epoch"), "n_epochs": ("number", None, None, ""), "rank": ("number", None, None, ""),
}
# Dicts keyed by stage or position name hold minutes ("stage_min": {"R": 22.5}).
_MINUTES_BY_NAME = {"stage_min": "stage", "position_min": "position"}
_UNIT_SECONDS = {"min": 60.0, "s": 1.0, "h": 3600.0}


def _field_meaning(key: str) -> tuple[str, str | None, str | None, str]:
    if key in FIELD_MEANINGS:
        return FIELD_MEANINGS[key]
    if "per_h" in key:
        return "rate", None, None, "events/h"
    if key.endswith("_pct"):
        return "percent", None, None, "%"
    for suffix, unit in (("_min", "min"), ("minutes", "min"), ("_s", "s"), ("_h", "h")):
        if key.endswith(suffix):
            return "duration", None, None, unit
    if key.startswith("n_"):
        return "count", None, None, ""
    if "spo2" in key:
        return "percent", "spo2", None, "%"
    return "number", None, None, ""


@dataclass
class Grounding:
    """Result of a grounding check.

    Attributes
    ----------
    matched, unmatched : the answer's figures as written, verified or not.
    failed : one record per unverified figure: {"claim", "meaning", "reason"}.
    rejected : why the language model's answer was replaced (its failed claims are then in
        `failed`), None when the answer shown is the one checked.
    """

    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    rejected: str | None = None

    @property
    def ok(self) -> bool:
        return not self.unmatched

    def to_dict(self) -> dict:
        """{"matched", "unmatched"}, plus "failed" (which claims, read as what) and "rejected" when set."""
        record = asdict(self)
        return {key: value for key, value in record.items() if key in ("matched", "unmatched") or value}


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


def _clause(text: str, start: int, end: int) -> tuple[str, str]:
    """The words before and after a figure inside its clause (at most `CONTEXT_CHARS` each side)."""
    before = text[max(0, start - CONTEXT_CHARS) : start]
    ends = list(_CLAUSE_END.finditer(before))
    before = before[ends[-1].end() :] if ends else before
    after = text[end : end + CONTEXT_CHARS]
    stop = _CLAUSE_END.search(after)
    return before, after[: stop.start()] if stop else after


# Subjects a figure of each quantity can have (an AHI is never a duration, a stage never a rate).
_SUBJECT_FAMILIES = {
    "rate": ("ahi", "odi", "rei"),
    "percent": ("se", "spo2", "t90", "stage:"),
    "duration": ("tst", "tib", "sol", "rem_latency", "waso", "t90", "stage:"),
    "bpm": ("hr",),
}
_IMPLIED_QUANTITY = {"ahi": "rate", "odi": "rate", "rei": "rate", "spo2": "percent", "se": "percent", "hr": "bpm"}


def _nearest_subject(before: str, after: str, quantity: str) -> str | None:
    allowed = _SUBJECT_FAMILIES.get(quantity)
    best: tuple[int, int, str] | None = None
    for order, (pattern, subject) in enumerate(_SUBJECT_RES):
        if allowed is not None and not subject.startswith(allowed):
            continue
        distances = [len(before) - m.end() for m in pattern.finditer(before)] + [m.start() for m in pattern.finditer(after)]
        if distances and (best is None or (min(distances), order) < best[:2]):
            best = (min(distances), order, subject)
    return best[2] if best else None


def _with_meaning(figure: Figure, text: str, start: int, end: int) -> Figure:
    """The figure with the quantity, subject and base its unit and clause give it."""
    before, after = _clause(text, start, end)
    if figure.kind == "clock":
        return replace(figure, quantity="clock")
    if figure.kind == "elapsed":
        compact = re.fullmatch(r"\d+h\d{2}m(?:\d{2}s)?", figure.text) is not None
        if _ELAPSED_CONTEXT.search(before) or _ELAPSED_CONTEXT.match(after.strip()):
            return replace(figure, quantity="elapsed")
        if compact:  # the tools' own elapsed form, also read as a length
            return replace(figure, quantity="elapsed_or_duration")
        subject = _nearest_subject(before, after, "duration")
        return replace(figure, quantity="duration", subject=subject, seconds=figure.value, seconds_step=figure.step)
    if _EPOCH_BEFORE.search(before):
        return replace(figure, quantity="epoch")
    if figure.seconds is not None:
        return replace(figure, quantity="duration", subject=_nearest_subject(before, after, "duration"))
    quantity = None
    if _PERCENT_AFTER.match(after):
        quantity = "percent"
    elif _BPM_AFTER.match(after):
        quantity = "bpm"
    elif _RATE_AFTER.match(after):
        quantity = "rate"
    else:
        for pattern, subject in _COUNTED_RE:
            if pattern.match(after) and not re.match(r"\s+(?:of|per)\b", after):
                return replace(figure, quantity="count", subject=subject)
    if quantity is None:
        subject = _nearest_subject(before, after, "number")
        return replace(figure, quantity=_IMPLIED_QUANTITY.get(subject or "", "number"), subject=subject)
    subject = _nearest_subject(before, after, quantity)
    base = None
    if quantity == "percent":
        base = "tib" if _TIB_BASE.search(after) else "tst" if _TST_BASE.search(after) else None
    return replace(figure, quantity=quantity, subject=subject, base=base)


def _severity_figures(text: str) -> list[tuple[int, Figure]]:
    """AASM severity bands stated about the night ("the study is normal", "the 'severe' band").

    A sentence naming several bands (a list of the bands themselves) claims none of them."""
    figures = []
    offset = 0
    for sentence in re.split(r"(?<=[.;!?\n])", text):
        words = {m.group(1).lower(): m for m in _SEVERITY.finditer(sentence)}
        if len(words) == 1 and _SEVERITY_TOPIC.search(sentence):
            word, match = next(iter(words.items()))
            figures.append((offset + match.start(), Figure(match.group(1), "severity", SEVERITY_VALUES[word], 1.0,
                                                           quantity="severity", subject="ahi")))
        offset += len(sentence)
    return figures


def extract_figures(text: str) -> list[Figure]:
    """Every clock time, elapsed time, number and severity band written in `text`, in order, with its meaning.

    Parameters
    ----------
    text : free text (an answer, or a tool's findings).

    Returns
    -------
    list of Figure.

    Examples
    --------
    >>> [(f.text, f.meaning) for f in extract_figures("You had 67 apneas and an AHI of 20.")]
    [('67', 'count (apnea)'), ('20', 'rate per hour (ahi)')]
    """
    text = _LIST_MARKER.sub(" ", text)
    clock_at = _PATTERN.groupindex["clock"] + 1
    elapsed_at = _PATTERN.groupindex["elapsed"] + 1
    figures = []
    for match in _PATTERN.finditer(text):
        if match.group("clock"):
            figure = _clock_figure(match, clock_at)
        elif match.group("hour"):
            hour = int(match.group("hour")) % 12 + (12 if match.group("half").lower() == "p" else 0)
            figure = Figure(match.group(0).strip(), "clock", float(hour * 3600), 3600.0)
        elif match.group("elapsed"):
            figure = _elapsed_figure(match, elapsed_at)
        elif match.group("number") or match.group("glued"):
            written = match.group("number") or match.group("glued")
            figure = _number_figure(written, _unit_after(text, match.end()))
        else:
            unit_s = _unit_after(text, match.end())
            value = _word_value(match.group("word"))
            seconds = None if unit_s is None else value * unit_s
            figure = Figure(match.group("word"), "number", float(value), 1.0, seconds, unit_s or 0.0)
        figures.append((match.start(), _with_meaning(figure, text, match.start(), match.end())))
    figures += _severity_figures(text)
    return [figure for _, figure in sorted(figures, key=lambda item: item[0])]


def _default_base(fact: Fact) -> Fact:
    # The tools' convention: a stage percentage is of TST, wake's of time in bed (`sleep_statistics`).
    if fact.quantity == "percent" and fact.base is None and (fact.subject or "").startswith("stage:"):
        return fact.model_copy(update={"base": "tib" if fact.subject == "stage:W" else "tst"})
    return fact


def _text_facts(key: str, text: str, span: tuple[int | None, int | None]) -> list[Fact]:
    facts = []
    for figure in extract_figures(text):
        quantity = "elapsed" if figure.quantity == "elapsed_or_duration" else figure.quantity
        facts.append(_default_base(Fact(field=key, quantity=quantity, subject=figure.subject, base=figure.base,
                                        unit=figure.kind, value=figure.value, seconds=figure.seconds,
                                        epoch_start=span[0], epoch_end=span[1])))
    return facts


def _number_fact(key: str, value: float, span: tuple[int | None, int | None]) -> Fact:
    quantity, subject, base, unit = _field_meaning(key)
    seconds = abs(value) * _UNIT_SECONDS[unit] if quantity == "duration" and unit in _UNIT_SECONDS else None
    return Fact(field=key, quantity=quantity, subject=subject, base=base, unit=unit, value=abs(value), seconds=seconds,
                epoch_start=span[0], epoch_end=span[1])


def _walk(value: Any, key: str, span: tuple[int | None, int | None]) -> Iterable[Fact]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if value == value:  # NaN is never a figure
            yield _number_fact(key, float(value), span)
    elif isinstance(value, str):
        try:
            decoded = json.loads(value)
        except (ValueError, TypeError):
            decoded = None
        if isinstance(decoded, (dict, list)):
            yield from _walk(decoded, key, span)
        elif key == "severity" and value.lower() in SEVERITY_VALUES:
            yield Fact(field=key, quantity="severity", subject="ahi", value=SEVERITY_VALUES[value.lower()])
        else:
            yield from _text_facts(key, value, span)
    elif isinstance(value, dict):
        if isinstance(value.get("epoch_start"), int) and isinstance(value.get("epoch_end"), int):
            span = (value["epoch_start"], value["epoch_end"])
        for name, item in value.items():
            if name in _MINUTES_BY_NAME and isinstance(item, dict):
                for label, minutes in item.items():
                    if isinstance(minutes, (int, float)) and not isinstance(minutes, bool):
                        subject = f"stage:{label}" if _MINUTES_BY_NAME[name] == "stage" else f"position:{label.lower()}"
                        yield Fact(field=f"{name}.{label}", quantity="duration", subject=subject, unit="min",
                                   value=float(minutes), seconds=float(minutes) * 60, epoch_start=span[0], epoch_end=span[1])
            else:
                yield from _walk(item, str(name), span)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item, key, span)


def result_facts(result: Any, key: str = "result") -> list[Fact]:
    """The typed facts of one tool result (a dict, a list, JSON text or plain text).

    Numeric fields get the meaning `FIELD_MEANINGS` gives their name (by suffix otherwise: ``*_min``
    minutes, ``*_pct`` percent, ``*_per_h`` rates, ``n_*`` counts); text is read like an answer;
    each fact keeps the epoch range of the innermost record that cites one.

    Examples
    --------
    >>> [(f.quantity, f.subject, f.value) for f in result_facts({"ahi": 23.4, "n_apneas": 67})]
    [('rate', 'ahi', 23.4), ('count', 'apnea', 67.0)]
    """
    return list(_walk(result, key, (None, None)))


def collect_tool_figures(tool_results: Iterable[Any]) -> list[Fact]:
    """All typed facts of a turn's tool results (dicts, lists, JSON strings or text)."""
    return [fact for result in tool_results for fact in result_facts(result)]


def _quantities_fit(claim: Figure, fact: Fact) -> bool:
    q, fq = claim.quantity, fact.quantity
    if q == fq:
        return True
    if q == "elapsed_or_duration":
        return fq in ("elapsed", "duration")
    if q == "number":
        return fq not in ("clock", "elapsed", "severity")
    # A field of unknown meaning ("score", "min_spo2") fits any plain figure but a named count.
    return fq == "number" and q in ("percent", "rate", "bpm", "count") and not (q == "count" and claim.subject)


def _meanings_fit(claim: Figure, fact: Fact) -> bool:
    if not _quantities_fit(claim, fact):
        return False
    if claim.subject and fact.subject and claim.subject != fact.subject:
        return False
    return not (claim.base and fact.base and claim.base != fact.base)


def _same_value(claim: Figure, fact: Fact) -> bool:
    """True when `claim` is the fact's value written at the claim's precision."""
    if claim.quantity == "clock":
        diff = (fact.value - claim.value) % 86400
        # "02:30" stands for 02:30:00-02:30:59 (truncation) or a rounded minute.
        return diff < claim.step or (86400 - diff) <= claim.step / 2
    if claim.seconds is not None or claim.quantity == "elapsed_or_duration" and fact.quantity == "duration":
        answer_s = claim.seconds if claim.seconds is not None else claim.value
        step_s = claim.seconds_step if claim.seconds is not None else claim.step
        source_s = fact.value if fact.quantity == "elapsed" else fact.seconds
        return source_s is not None and abs(source_s - answer_s) <= step_s / 2 + 1e-9
    if claim.quantity in ("elapsed", "elapsed_or_duration"):
        diff = fact.value - claim.value
        return -claim.step / 2 <= diff < claim.step
    return abs(claim.value - fact.value) <= claim.step / 2 + 1e-9


def _why(claim: Figure, facts: list[Fact]) -> str:
    if claim.quantity == "severity":
        return "the tool results give another severity band" if any(f.quantity == "severity" for f in facts) else (
            "no tool result gives a severity band")
    elsewhere = [f for f in facts if f.quantity != "severity" and _same_value(claim, f) and not _meanings_fit(claim, f)]
    if elsewhere:
        other = Figure(claim.text, claim.kind, claim.value, claim.step, quantity=elsewhere[0].quantity,
                       subject=elsewhere[0].subject, base=elsewhere[0].base)
        return f"the tool results have {claim.text} only as a different figure ({elsewhere[0].field}: {other.meaning})"
    return f"no tool result gives this {claim.meaning}"


def check_grounding(answer: str, tool_results: Iterable[Any]) -> Grounding:
    """Match every figure of `answer` to a fact of the same meaning in `tool_results`.

    Parameters
    ----------
    answer : the text shown to the user.
    tool_results : this turn's tool outputs (dicts or strings; the user's question may be one).

    Returns
    -------
    Grounding with the matched and unmatched figures as written in the answer, and for each
    unmatched one the meaning looked for and why it failed.

    Examples
    --------
    >>> check_grounding("AHI 23 at 02:30", [{"ahi": 23.4, "clock_start": "02:30:00"}]).unmatched
    []
    >>> check_grounding("You had 67 apneas", [{"epoch_start": 67, "epoch_end": 67, "n_apneas": 12}]).unmatched
    ['67']
    """
    facts = collect_tool_figures(tool_results)
    report = Grounding()
    for claim in extract_figures(answer):
        if any(_meanings_fit(claim, fact) and _same_value(claim, fact) for fact in facts):
            report.matched.append(claim.text)
        else:
            report.unmatched.append(claim.text)
            report.failed.append({"claim": claim.text, "meaning": claim.meaning, "reason": _why(claim, facts)})
    return report




def complete_citations(answer: str, tool_results: Iterable[Any]) -> str:
    """Add the elapsed time and epochs after each clock range of `answer` that a tool cited.

    Answers cite clock time, elapsed time and epochs; small models often keep only the clock
    range. A range is completed only when a tool result gives that exact range, so nothing is
    made up; a range already followed by its citation is left alone.
    """
    known = {}  # (clock start, clock end) -> "(elapsed A-B, epochs X-Y)"
    for result in tool_results:
        text = result if isinstance(result, str) else json.dumps(result)
        for citation in parse_citations(text):
            if citation["clock_start"] is not None:
                known[citation["clock_start"], citation["clock_end"]] = format_citation({**citation, "clock_start": None})
    pieces, done = [], 0
    for found in parse_clock_ranges(answer):
        rest = known.get((found["clock_start"], found["clock_end"]))
        if rest is not None:
            pieces += [answer[done : found["end"]], " ", rest]
            done = found["end"]
    return "".join(pieces) + answer[done:]
