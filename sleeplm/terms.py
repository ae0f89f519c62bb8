"""Shared terms: the one home of the vocabulary every layer speaks.

Sleep stages, caption domains, event kinds, audiences, the AASM severity bands and heart-rate
thresholds, the time-citation format (written and parsed here, nowhere else) and the one way to
cut a mask into consecutive runs. This module is the bottom floor: it imports nothing from the
project, so anything above may import it.

Examples
--------
>>> from sleeplm.terms import format_citation, parse_citations
>>> text = format_citation({"clock_start": "23:00:00", "clock_end": "23:01:00",
...                         "elapsed_start": "0h00m00s", "elapsed_end": "0h01m00s",
...                         "epoch_start": 0, "epoch_end": 1})
>>> text
'23:00:00-23:01:00 (elapsed 0h00m00s-0h01m00s, epochs 0-1)'
>>> parse_citations(text)[0]["epoch_end"]
1
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

__all__ = [
    "EPOCH_SEC", "STAGES", "UNSCORED", "SLEEP_STAGES", "NREM_STAGES", "STAGE_NAMES",
    "CAPTION_DOMAINS", "CaptionDomain", "PRECISIONS", "PRECISION_ENV", "EVENT_KINDS", "ANNOTATED_EVENT_KINDS",
    "SCORED_EVENT_KINDS", "EVENT_GROUPS",
    "AUDIENCES", "Audience", "SEVERITY_BANDS", "SEVERITY_NOTE", "TACHY_BPM", "BRADY_BPM", "HR_SUSTAINED_S",
    "severity_band", "format_elapsed", "format_clock", "format_citation", "parse_citations", "parse_clock_ranges",
    "CITATION_PATTERN", "runs", "runs_of", "value_runs",
]

# One scoring epoch, in seconds (AASM).
EPOCH_SEC = 30

# --- Sleep stages -------------------------------------------------------------------------------
# Hypnograms are arrays of these labels, one per 30-s epoch; "?" = unscored or artefact.
STAGES = ("W", "N1", "N2", "N3", "R")
UNSCORED = "?"
SLEEP_STAGES = ("N1", "N2", "N3", "R")
NREM_STAGES = ("N1", "N2", "N3")
# How a stage is named in prose (descriptions, answers).
STAGE_NAMES = {"W": "Wake", "N1": "Stage N1", "N2": "Stage N2", "N3": "Stage N3", "R": "REM sleep", UNSCORED: "Unscored"}

# --- SleepLM caption domains (the order is the model's domain id) --------------------------------
CAPTION_DOMAINS = ("brain", "cardiac", "respiratory", "position_muscle", "stage_event")
CaptionDomain = Literal["brain", "cardiac", "respiratory", "position_muscle", "stage_event"]
# The SleepLM signal encoder's precision a user may ask for (--precision, $SLEEPLM_PRECISION; sleeplm.model.precision).
PRECISIONS = ("auto", "fp32", "bf16", "int8")
PRECISION_ENV = "SLEEPLM_PRECISION"

# --- Events -------------------------------------------------------------------------------------
# Kinds the measurements detect (sleeplm.measure.events).
EVENT_KINDS = ("apnea", "hypopnea", "desaturation", "arousal", "tachycardia", "bradycardia", "position_change")
# A scoring file (or the simulator's truth) may also mark artefacts; nothing measured is one.
ANNOTATED_EVENT_KINDS = (*EVENT_KINDS, "artefact")
# Every kind a technician's scoring file may hold (sleeplm.io.annotations); "other" keeps an
# unrecognised label's scrubbed text.
SCORED_EVENT_KINDS = (*ANNOTATED_EVENT_KINDS, "rera", "limb_movement", "snore", "lights_off", "lights_on", "other")
# Names that stand for several kinds.
EVENT_GROUPS = {"respiratory": ("apnea", "hypopnea"), "heart_rate": ("tachycardia", "bradycardia")}

# --- Who reads an answer ------------------------------------------------------------------------
AUDIENCES = ("clinician", "patient")
Audience = Literal["clinician", "patient"]

# --- AASM adult thresholds ----------------------------------------------------------------------
# Severity of an AHI/REI (events per hour), lower edge inclusive.
SEVERITY_BANDS = ((30, "severe"), (15, "moderate"), (5, "mild"), (0, "normal"))
_EDGES = [edge for edge, _ in SEVERITY_BANDS[::-1]][1:]  # 5, 15, 30
SEVERITY_NOTE = (
    f"AASM severity bands (<{_EDGES[0]} {SEVERITY_BANDS[-1][1]}, "
    + ", ".join(f"{lo}-{hi} {label}" for lo, hi, (_, label) in zip(_EDGES, _EDGES[1:], SEVERITY_BANDS[-2::-1]))
    + f", >={_EDGES[-1]} {SEVERITY_BANDS[0][1]}) are screening information, not a diagnosis."
)
# Sinus tachycardia / bradycardia during sleep: sustained (>= 30 s) > 90 bpm or < 40 bpm.
TACHY_BPM, BRADY_BPM, HR_SUSTAINED_S = 90.0, 40.0, 30


def severity_band(index_per_h: float | None) -> str | None:
    """AASM adult severity of an AHI/REI: normal < 5 <= mild < 15 <= moderate < 30 <= severe.

    Examples
    --------
    >>> severity_band(17.3), severity_band(None)
    ('moderate', None)
    >>> [severity_band(x) for x in (4.9, 5.0, 14.9, 15.0, 30.0)]    # lower edges are inclusive
    ['normal', 'mild', 'mild', 'moderate', 'severe']
    """
    if index_per_h is None:
        return None
    return next(label for edge, label in SEVERITY_BANDS if index_per_h >= edge)


# --- Time citations -----------------------------------------------------------------------------
def format_elapsed(seconds: float) -> str:
    """Elapsed time since recording start, e.g. ``"3h10m00s"``.

    Examples
    --------
    >>> format_elapsed(11400), format_elapsed(95.4)
    ('3h10m00s', '0h01m35s')
    """
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s"


def format_clock(seconds_since_midnight: float) -> str:
    """Clock time of day ``"HH:MM:SS"`` (wraps past midnight).

    Examples
    --------
    >>> format_clock(23 * 3600 + 30 * 60), format_clock(86400 + 3661)   # past midnight wraps
    ('23:30:00', '01:01:01')
    """
    total = int(round(seconds_since_midnight)) % 86400
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def format_citation(citation: dict) -> str:
    """The prose citation of a time range: ``"HH:MM:SS-HH:MM:SS (elapsed A-B, epochs X-Y)"``.

    `citation` holds ``elapsed_start``, ``elapsed_end``, ``epoch_start``, ``epoch_end`` and,
    when the recording's start clock is known, ``clock_start`` and ``clock_end`` (as written by
    `Recording.cite`). Without a clock the clock part is left out; `parse_citations` reads both.

    Examples
    --------
    >>> format_citation({"elapsed_start": "0h00m00s", "elapsed_end": "0h00m30s", "epoch_start": 0, "epoch_end": 0})
    '(elapsed 0h00m00s-0h00m30s, epoch 0)'
    >>> rec = tiny_recording()                       # starts at 23:00:00 (conftest.py)
    >>> format_citation(rec.cite(240.0, 300.0))
    '23:04:00-23:05:00 (elapsed 0h04m00s-0h05m00s, epochs 8-9)'
    """
    first, last = citation["epoch_start"], citation["epoch_end"]
    epochs = f"epoch {first}" if first == last else f"epochs {first}-{last}"
    inner = f"(elapsed {citation['elapsed_start']}-{citation['elapsed_end']}, {epochs})"
    if citation.get("clock_start") is not None:
        return f"{citation['clock_start']}-{citation['clock_end']} {inner}"
    return inner


_CLOCK_RE = r"\d\d:\d\d:\d\d"
_ELAPSED_RE = r"\d+h\d\dm\d\ds"
_CLOCK_RANGE_RE = rf"(?P<clock_start>{_CLOCK_RE})-(?P<clock_end>{_CLOCK_RE})"
CITATION_PATTERN = re.compile(
    rf"(?:{_CLOCK_RANGE_RE} )?"
    rf"\(elapsed (?P<elapsed_start>{_ELAPSED_RE})-(?P<elapsed_end>{_ELAPSED_RE}), "
    r"epochs? (?P<epoch_start>\d+)(?:-(?P<epoch_end>\d+))?\)"
)


def parse_citations(text: str) -> list[dict]:
    """Every citation `format_citation` wrote in `text`, in order, as dicts.

    Each dict has ``clock_start``/``clock_end`` (None when the citation has no clock),
    ``elapsed_start``, ``elapsed_end``, ``epoch_start``, ``epoch_end`` (int, inclusive) and
    ``text`` (the citation as written, clock included).

    Examples
    --------
    >>> parse_citations("REM at (elapsed 1h00m00s-1h01m00s, epochs 120-121).")[0]["epoch_start"]
    120
    >>> found = parse_citations("Apnea 23:04:23-23:04:37 (elapsed 0h04m23s-0h04m37s, epoch 8), then none.")
    >>> [(c["clock_start"], c["epoch_start"], c["epoch_end"]) for c in found]
    [('23:04:23', 8, 8)]
    """
    found = []
    for match in CITATION_PATTERN.finditer(text):
        first = int(match["epoch_start"])
        found.append({
            "clock_start": match["clock_start"], "clock_end": match["clock_end"],
            "elapsed_start": match["elapsed_start"], "elapsed_end": match["elapsed_end"],
            "epoch_start": first, "epoch_end": int(match["epoch_end"]) if match["epoch_end"] else first,
            "text": match.group(0),
        })
    return found


# A clock range that the elapsed time and epochs of its citation do not follow.
_BARE_CLOCK_RANGE = re.compile(rf"{_CLOCK_RANGE_RE}(?! \(elapsed)")


def parse_clock_ranges(text: str) -> list[dict]:
    """Every clock range ``"HH:MM:SS-HH:MM:SS"`` in `text` written without the rest of its citation.

    Each dict has ``clock_start``, ``clock_end`` and ``start``/``end`` (character offsets of the
    range in `text`). A range followed by ``" (elapsed ..."`` (a whole `format_citation`) is skipped.

    Examples
    --------
    >>> text = "Apnea 23:04:23-23:04:37 (elapsed 0h04m23s-0h04m37s, epoch 8); REM 23:10:00-23:12:30."
    >>> [(r["clock_start"], r["clock_end"], text[r["start"]:r["end"]]) for r in parse_clock_ranges(text)]
    [('23:10:00', '23:12:30', '23:10:00-23:12:30')]
    """
    return [{"clock_start": m["clock_start"], "clock_end": m["clock_end"], "start": m.start(), "end": m.end()}
            for m in _BARE_CLOCK_RANGE.finditer(text)]


# --- Consecutive runs ---------------------------------------------------------------------------
def runs(mask: np.ndarray) -> np.ndarray:
    """Start (inclusive) and end (exclusive) indices of the True runs of a 1-D mask, shape ``[k, 2]``.

    Examples
    --------
    >>> runs(np.array([0, 1, 1, 0, 1], dtype=bool)).tolist()
    [[1, 3], [4, 5]]
    >>> runs(np.zeros(4, dtype=bool)).shape
    (0, 2)
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return np.zeros((0, 2), dtype=np.intp)
    # Where the mask changes (one comparison pass; padding and int8 diffs cost 10x more on a night).
    edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    if mask[0]:
        edges = np.concatenate([[0], edges])
    if mask[-1]:
        edges = np.concatenate([edges, [mask.size]])
    return edges.reshape(-1, 2)


def runs_of(mask: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """Inclusive (first, last) runs of True in a 1-D mask, joining runs whose gap is <= `max_gap`.

    Examples
    --------
    >>> runs_of(np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool), max_gap=1)
    [(0, 3), (6, 6)]
    """
    joined: list[tuple[int, int]] = []
    for start, end in runs(mask):
        if joined and start - joined[-1][1] <= max_gap + 1:
            joined[-1] = (joined[-1][0], int(end) - 1)
        else:
            joined.append((int(start), int(end) - 1))
    return joined


def value_runs(values) -> list[tuple[int, int, object]]:
    """Runs of equal consecutive values: (start inclusive, end exclusive, value).

    Examples
    --------
    >>> value_runs(["a", "a", "b", "a"])
    [(0, 2, 'a'), (2, 3, 'b'), (3, 4, 'a')]
    """
    values = list(values)
    found: list[tuple[int, int, object]] = []
    for i, value in enumerate(values):
        if found and found[-1][2] == value:
            found[-1] = (found[-1][0], i + 1, value)
        else:
            found.append((i, i + 1, value))
    return found
