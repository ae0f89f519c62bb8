"""Scoring files that come with a recording: the technician's stages and events, in any of the formats
people have, read into one tidy events table and checked against the recording they claim to score.

Formats (`read_scoring` tells them apart by suffix and content, never by trusting the name alone):

- EDF+ annotation files (Sleep-EDF ``*-Hypnogram.edf``), and plain CSVs with columns
  ``onset, duration, description`` (seconds from the recording start) or one column ``stage``;
- NSRR XML (``*-nsrr.xml``, root ``PSGAnnotation``): ``ScoredEvent`` elements with
  ``EventType``/``EventConcept``/``Start``/``Duration`` (seconds from the EDF start), the
  "Recording Start Time" event's ``ClockTime``, and ``SpO2Nadir`` of desaturations;
- Compumedics Profusion XML (``*-profusion.xml``, NSRR "learn" ``*.xml``, root ``CMPStudyConfig``):
  ``ScoredEvent`` elements (``Name``, ``Start``, ``Duration``, ``LowestSpO2``) and a
  ``SleepStages`` list of R&K codes (0 wake, 1-4 NREM, 5 REM, others unscored) per ``EpochLength``;
- UCDDB-style text files: ``<id>_respevt.txt`` (clock time, type such as ``HYP-O`` or ``APNEA-C``,
  optional PB/CS, duration, lowest SpO2...) and ``<id>_stage.txt`` (one code per 30-s epoch from the
  recording start: 0 wake, 1 REM, 2-5 stages 1-4, 6 artefact, 7 indeterminate); either file brings
  the other one along when it lies beside it;
- Noxturnal event exports (CSV in UTF-16 or UTF-8, English or French headers such as ``Start
  Time, End Time, Event, Duration`` / ``Heure de début, Heure de fin, Événement, Durée``) and
  other event lists whose times are clock times (``22:30:00``) or dates and times.

Stages in any epoch length and in R&K or AASM codes map onto the 30-s grid
(`sleeplm.io.annotations.stages_on_grid`); events become `SCORED_EVENT_COLUMNS` rows whose labels
are scrubbed of identifiers (`sleeplm.io.deid.scrub_text`); unknown labels stay as kind ``"other"``.
XML is user input: it is parsed with defusedxml (no DTD, no entities, no external references) and
files above `MAX_SCORING_BYTES` are refused. `check_scoring_fits` refuses a file that does not
belong to the recording instead of cutting it to fit.

Examples
--------
>>> _ = (tmp_dir / "night-nsrr.xml").write_text(
...     "<PSGAnnotation><EpochLength>30</EpochLength><ScoredEvents>"
...     "<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept>"
...     "<Start>0</Start><Duration>60</Duration></ScoredEvent>"
...     "<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>SpO2 desaturation|SpO2 desaturation"
...     "</EventConcept><Start>35</Start><Duration>12</Duration><SpO2Nadir>87</SpO2Nadir></ScoredEvent>"
...     "</ScoredEvents></PSGAnnotation>")
>>> scoring = read_scoring(tmp_dir / "night-nsrr.xml")
>>> scoring.source, scoring.stages, scoring.events[["kind", "spo2_nadir"]].values.tolist()
('NSRR XML', [(0.0, 60.0, 'W')], [['desaturation', 87.0]])
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sleeplm.errors import AnnotationFileError, ScoringMismatchError
from sleeplm.io.annotations import SCORED_EVENT_COLUMNS, scored_events, split_annotations, stages_on_grid
from sleeplm.io.recording import ReferenceScoring
from sleeplm.terms import EPOCH_SEC, UNSCORED, format_clock, format_elapsed

__all__ = [
    "Scoring", "read_scoring", "read_annotation_file", "find_scoring_file", "check_scoring_fits", "scoring_reference",
    "SCORING_SUFFIXES", "MAX_SCORING_BYTES", "FIT_TOLERANCE_S", "SCORED_EVENT_COLUMNS",
]

logger = logging.getLogger(__name__)

# Name endings of a scoring file beside ``<stem>.edf``, in the order they are looked for.
SCORING_SUFFIXES = ("-nsrr.xml", "-profusion.xml", ".xml", "_respevt.txt", "_stage.txt", "-events.csv", "_events.csv")
# Real scoring files are kilobytes to a few megabytes; a larger one is not read into memory.
MAX_SCORING_BYTES = 64 * 2**20
# Slack when checking that a scoring file fits its recording: the recording keeps whole 30-s
# epochs only, and a scorer's last epoch may run past the signal's last whole epoch.
FIT_TOLERANCE_S = 2 * EPOCH_SEC
# A scoring whose stages span less than this share of the recording's epochs is another night's.
MIN_STAGED_SHARE = 0.5

_EDF_SUFFIXES = (".edf", ".bdf", ".rec")
_PROFUSION_CODES = {0: "W", 1: "N1", 2: "N2", 3: "N3", 4: "N3", 5: "R"}
_UCDDB_STAGE_CODES = {0: "W", 1: "R", 2: "N1", 3: "N2", 4: "N3", 5: "N3"}
_CLOCK_ONLY = re.compile(r"^\s*(\d{1,2})[:.](\d{2})(?:[:.](\d{2}(?:[.,]\d+)?))?\s*$")
_RESPEVT_LINE = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})\s+(\S+)(.*)$")
# Column names of clock-timed event exports (Noxturnal in English and French, and similar).
_START_COLUMNS = ("start time", "heure de début", "heure de debut", "start", "begin", "begin time", "onset time",
                  "time", "heure", "startzeit")
_END_COLUMNS = ("end time", "heure de fin", "end", "stop time", "endzeit")
_EVENT_COLUMNS = ("event", "événement", "evenement", "event type", "type", "name", "label", "ereignis")
_DURATION_COLUMNS = ("duration", "durée", "duree", "duration [s]", "duration (s)", "dauer")


@dataclass
class Scoring:
    """A scoring file read and placed on the recording's time axis.

    Attributes
    ----------
    source : the format, e.g. ``"NSRR XML"``, ``"Profusion XML"``, ``"UCDDB text"``,
        ``"Noxturnal CSV"``, ``"EDF+"``, ``"CSV"`` (never the file's name).
    stages : ``(onset_s, duration_s, stage)`` rows in the file's own epoch length, seconds from the
        recording start; stage in `sleeplm.terms.STAGES` or ``"?"`` (unscored, movement, artefact).
    events : the tidy events table, columns `SCORED_EVENT_COLUMNS`, seconds from the recording start.
    start_seconds : the clock time (s since midnight) the file gives for its own start, or None.
    offset_s : where that start falls in the recording (s after its start; negative = before),
        or None when the file states no start or the recording has no clock.
    """

    source: str
    stages: list[tuple[float, float, str]]
    events: pd.DataFrame
    start_seconds: float | None = None
    offset_s: float | None = None


def read_scoring(path, recording_start: float | None = None) -> Scoring:
    """Read a scoring file of any supported format (see the module) and place it on the recording's clock.

    Parameters
    ----------
    path : the scoring file.
    recording_start : the recording's start, seconds since midnight (`Recording.start_seconds`),
        or None. Files that state their own start (EDF+, NSRR XML) are shifted by the difference;
        clock-timed files (Noxturnal, UCDDB events) are placed by it.

    Returns
    -------
    Scoring

    Raises
    ------
    AnnotationFileError : missing, too large, of an unknown kind, malformed or hostile (XML with
        a DTD or entities), or clock-timed events for a recording without a start time.

    Examples
    --------
    >>> _ = (tmp_dir / "events.csv").write_text("Start Time,End Time,Event,Duration\\n"
    ...     "22:00:30,22:01:00,N2,30\\n22:00:40,22:00:55,Obstructive Apnea,15\\n")
    >>> scoring = read_scoring(tmp_dir / "events.csv", recording_start=22 * 3600)
    >>> scoring.source, scoring.stages, scoring.events[["onset_s", "kind"]].values.tolist()
    ('Noxturnal CSV', [(30.0, 30.0, 'N2')], [[40.0, 'apnea']])
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationFileError("the scoring file does not exist; check the annotations path.")
    if path.stat().st_size > MAX_SCORING_BYTES:
        raise AnnotationFileError(f"the scoring file is larger than {MAX_SCORING_BYTES // 2**20} MiB; it is not a "
                                  "scoring file of one night.")
    suffix = path.suffix.lower()
    if suffix in _EDF_SUFFIXES:
        onsets, durations, labels, start = read_annotation_file(path)
        source, (rows, events) = "EDF+", split_annotations(onsets, durations, labels)
    elif suffix == ".xml":
        source, rows, events, start = _read_xml(path)
    elif suffix == ".txt":
        source, (rows, events), start = "UCDDB text", _read_ucddb(path, recording_start), None
    elif suffix == ".csv":
        source, rows, events, start = _read_csv(path)
    else:
        raise AnnotationFileError(
            f"scoring files of type '{suffix or '(none)'}' are not supported; give an EDF+ annotation file "
            "(e.g. *-Hypnogram.edf), an NSRR or Profusion XML, UCDDB *_respevt.txt/*_stage.txt, a Noxturnal "
            "CSV export, or a CSV with columns onset, duration, description or a column stage."
        )
    times = np.array([(o, d) for o, d, _ in rows] + events[["onset_s", "duration_s"]].values.tolist(), dtype=float)
    if times.size and (not np.isfinite(times).all() or (times[:, 1] < 0).any()):
        raise AnnotationFileError("the scoring file has a start or duration that is not a finite number of seconds, "
                                  "or a negative duration; re-export it.")
    offset = None
    if start is not None and recording_start is not None:
        offset = (start - recording_start + 43200) % 86400 - 43200  # the nearer of the two days
        rows = [(onset + offset, duration, stage) for onset, duration, stage in rows]
        events = events.assign(onset_s=events["onset_s"] + offset)
    logger.info("scoring file (%s): %d stage rows, %d events", source, len(rows), len(events))
    return Scoring(source=source, stages=rows, events=events.reset_index(drop=True), start_seconds=start,
                   offset_s=offset)


def check_scoring_fits(scoring: Scoring, n_epochs: int, recording_start: float | None = None) -> None:
    """Refuse a scoring file that does not belong to a recording of `n_epochs` 30-s epochs.

    Refused (`ScoringMismatchError`, saying what does not fit): a stated start outside the
    recording; scored stages or events that end more than `FIT_TOLERANCE_S` after its end or
    begin that long before its start; stages spanning less than `MIN_STAGED_SHARE` of its epochs.
    Unscored ("?") stage rows past the end are not counted: scoring software pads the hypnogram
    with them to its own view of the night.

    Examples
    --------
    >>> scoring = Scoring("CSV", [(0.0, 30.0, "W"), (30.0, 30.0, "N1")], scored_events([300.0], [10.0], ["Arousal"]))
    >>> check_scoring_fits(scoring, n_epochs=4)
    Traceback (most recent call last):
    ...
    sleeplm.errors.ScoringMismatchError: the scoring file has events up to 0h05m10s after the recording start, ...
    """
    duration = n_epochs * EPOCH_SEC
    advice = ("It belongs to another recording: give this recording's own scoring file with --annotations FILE "
              "(nothing was cut to fit).")
    if scoring.offset_s is not None and not -FIT_TOLERANCE_S <= scoring.offset_s < duration:
        clock = format_clock(recording_start) if recording_start is not None else "its start"
        raise ScoringMismatchError(
            f"the scoring file starts at {format_clock(scoring.start_seconds)}, {abs(scoring.offset_s) / 60:.0f} min "
            f"{'before' if scoring.offset_s < 0 else 'after'} the recording's start ({clock}), outside the recording. "
            + advice)
    scored = [(onset, onset + length) for onset, length, stage in scoring.stages if stage != UNSCORED]
    spans = {"stages": scored,
             "events": list(zip(scoring.events["onset_s"], scoring.events["onset_s"] + scoring.events["duration_s"]))}
    for what, rows in spans.items():
        if not rows:
            continue
        first, last = min(lo for lo, _ in rows), max(hi for _, hi in rows)
        if last > duration + FIT_TOLERANCE_S:
            raise ScoringMismatchError(
                f"the scoring file has {what} up to {format_elapsed(last)} after the recording start, but the recording "
                f"lasts {format_elapsed(duration)}. " + advice)
        if first < -FIT_TOLERANCE_S:
            raise ScoringMismatchError(
                f"the scoring file has {what} from {format_elapsed(-first)} before the recording start. " + advice)
    if scoring.stages:
        staged = (max(o + d for o, d, _ in scoring.stages) - max(min(o for o, _, _ in scoring.stages), 0)) / EPOCH_SEC
        if staged < MIN_STAGED_SHARE * n_epochs:
            raise ScoringMismatchError(
                f"the scoring file stages {staged:.0f} epochs of 30 s but the recording holds {n_epochs}: "
                "far too few for its scoring. " + advice)


def scoring_reference(scoring: Scoring, n_epochs: int, found_beside: bool = False) -> ReferenceScoring:
    """The `ReferenceScoring` of a scoring file on a recording of `n_epochs` 30-s epochs.

    An event that starts up to `FIT_TOLERANCE_S` before the recording (`check_scoring_fits`
    refuses earlier ones) is kept from the recording's start: its part before it has no signal.

    Examples
    --------
    >>> ref = scoring_reference(Scoring("CSV", [(0.0, 20.0, "W"), (20.0, 40.0, "N2")], scored_events([], [], [])), 2)
    >>> ref.stages.tolist(), ref.source
    (['W', 'N2'], 'CSV file given with the recording')
    """
    events = scoring.events
    early = events["onset_s"] < 0
    if early.any():
        events = events.assign(duration_s=np.where(early, np.maximum(events["duration_s"] + events["onset_s"], 0.0),
                                                   events["duration_s"]),
                               onset_s=events["onset_s"].clip(lower=0.0))
    return ReferenceScoring(
        stages=stages_on_grid(scoring.stages, n_epochs) if scoring.stages else None,
        events=events,
        source=f"{scoring.source} file {'found beside' if found_beside else 'given with'} the recording",
    )


def find_scoring_file(path) -> Path | None:
    """The scoring file of recording `path`, found by name (case ignored), or None.

    ``night.edf`` is scored by ``night-nsrr.xml``, ``night-profusion.xml``, ``night.xml``,
    ``night_respevt.txt`` / ``night_stage.txt``, ``night-events.csv`` or ``night_events.csv``
    beside it (`SCORING_SUFFIXES`, first found wins). In NSRR's download layout
    (``polysomnography/edfs/shhs1/shhs1-200001.edf``) the files of the parallel folders
    ``annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml`` and ``annotations-events-profusion/...``
    are found too.

    Examples
    --------
    >>> _ = (tmp_dir / "n7.edf").write_bytes(b""), (tmp_dir / "N7-NSRR.xml").write_text("<PSGAnnotation/>")
    >>> find_scoring_file(tmp_dir / "n7.edf").name
    'N7-NSRR.xml'
    """
    path = Path(path)
    stem = path.stem.lower()
    siblings = {p.name.lower(): p for p in path.parent.iterdir() if p.is_file() and p.name.lower().startswith(stem)}
    for ending in SCORING_SUFFIXES:
        found = siblings.get(stem + ending)
        if found is not None and found != path:
            return found
    parts = path.parent.parts
    if "edfs" in parts:  # NSRR: polysomnography/edfs/<cohort>/ -> polysomnography/annotations-events-*/<cohort>/
        at = len(parts) - 1 - parts[::-1].index("edfs")
        for folder, ending in (("annotations-events-nsrr", "-nsrr.xml"), ("annotations-events-profusion", "-profusion.xml")):
            found = Path(*parts[:at], folder, *parts[at + 1:], path.stem + ending)
            if found.is_file():
                return found
    return None


def read_annotation_file(path) -> tuple[np.ndarray, np.ndarray, list[str], float | None]:
    """Read an EDF+ annotation file or a plain CSV of annotations.

    Parameters
    ----------
    path : an EDF+ file whose annotations hold the scoring (e.g. Sleep-EDF ``*-Hypnogram.edf``),
        or a CSV with either columns ``onset, duration, description`` (seconds from the
        recording's start) or one column ``stage`` with one label per 30-s epoch.

    Returns
    -------
    onsets_s, durations_s, labels, start_seconds : the annotations, and the EDF+ file's start time
        of day (s, for aligning it with the recording) or None for a CSV.

    Raises
    ------
    AnnotationFileError : missing, unreadable, or of another format.

    Examples
    --------
    >>> _ = (tmp_dir / "stages.csv").write_text("stage\\nW\\nN1\\nN2\\nN2\\n")
    >>> onsets, durations, labels, start = read_annotation_file(tmp_dir / "stages.csv")
    >>> onsets.tolist(), durations.tolist(), labels, start
    ([0.0, 30.0, 60.0, 90.0], [30.0, 30.0, 30.0, 30.0], ['W', 'N1', 'N2', 'N2'], None)
    >>> onsets, _, labels, start = read_annotation_file(tiny_night_path())   # an EDF+ file's own annotations
    >>> labels[0], start
    ('Sleep stage W', 82800.0)
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationFileError("the scoring file does not exist; check the annotations path.")
    suffix = path.suffix.lower()
    if suffix in _EDF_SUFFIXES:
        import mne

        start = _edf_start(path)
        try:
            ann = mne.read_annotations(path)
        except Exception as exc:  # mne raises many kinds for a file that is not EDF+
            raise AnnotationFileError(
                f"the scoring file's EDF+ annotations could not be read ({type(exc).__name__}); re-export it."
            ) from exc
        return np.asarray(ann.onset, dtype=float), np.asarray(ann.duration, dtype=float), list(ann.description), start
    if suffix != ".csv":
        raise AnnotationFileError(
            f"scoring files of type '{suffix or '(none)'}' are not supported here; pass an EDF+ annotation file "
            "(e.g. *-Hypnogram.edf) or a CSV with columns onset, duration, description or a column stage."
        )
    table = _csv_table(path)
    plain = _plain_csv(table)
    if plain is None:
        raise AnnotationFileError(
            f"the scoring CSV has columns {list(table.columns)}; it needs onset, duration, description "
            "(seconds from the recording start) or a single column stage (one label per 30-s epoch)."
        )
    return plain


def _edf_start(path: Path) -> float | None:
    """Start time of day of an EDF/BDF file's header (None when its hh.mm.ss field is not a time)."""
    with path.open("rb") as handle:
        fixed = handle.read(256)
    if len(fixed) < 256 or not fixed.startswith((b"0       ", b"\xffBIOSEMI")):
        raise AnnotationFileError("the scoring file is not a readable EDF+ file: its header is not an EDF/BDF header.")
    clock = re.fullmatch(r"\s*(\d\d)\.(\d\d)\.(\d\d)\s*", fixed[176:184].decode("latin-1"))
    if clock is None or int(clock[1]) > 23 or int(clock[2]) > 59 or int(clock[3]) > 59:
        return None
    return float(int(clock[1]) * 3600 + int(clock[2]) * 60 + int(clock[3]))


# ---- CSV ------------------------------------------------------------------------------------------
def _decoded(path: Path) -> str:
    """The text of a file written as UTF-16 (with BOM), UTF-8 or, failing both, Latin-1."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _csv_table(path: Path) -> pd.DataFrame:
    text = _decoded(path)
    sep = max((",", ";", "\t"), key=text.split("\n", 1)[0].count)
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise AnnotationFileError(f"the scoring CSV could not be parsed ({exc}); save it as plain CSV.") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    return table


def _plain_csv(table: pd.DataFrame):
    """``(onsets, durations, labels, None)`` of an offsets CSV or a one-column stage CSV, else None."""
    if {"onset", "duration", "description"} <= set(table.columns):
        try:
            onsets = table["onset"].astype(float).to_numpy()
            durations = table["duration"].replace("", "0").astype(float).to_numpy()
        except ValueError:
            raise AnnotationFileError("the scoring CSV's onset/duration columns must be seconds (numbers).") from None
        return onsets, durations, table["description"].astype(str).tolist(), None
    if "stage" in table.columns and len(table.columns) == 1:
        n = len(table)
        return np.arange(n) * float(EPOCH_SEC), np.full(n, float(EPOCH_SEC)), table["stage"].astype(str).tolist(), None
    return None


def _column(table: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in table.columns), None)


def _read_csv(path: Path):
    table = _csv_table(path)
    plain = _plain_csv(table)
    if plain is not None:
        onsets, durations, labels, _ = plain
        return ("CSV", *split_annotations(onsets, durations, labels), None)
    start_col, event_col = _column(table, _START_COLUMNS), _column(table, _EVENT_COLUMNS)
    if start_col is None or event_col is None:
        raise AnnotationFileError(
            f"the scoring CSV has columns {list(table.columns)}; it needs onset, duration, description "
            "(seconds from the recording start), a single column stage (one label per 30-s epoch), or an event "
            "export with a start time and an event column (Noxturnal: Start Time, End Time, Event, Duration)."
        )
    onsets, reference = _clock_offsets(table[start_col])
    keep = ~np.isnan(onsets)  # units rows ("[]", "[s]") and blank lines
    if not keep.any():
        raise AnnotationFileError("the scoring CSV's start times could not be read as clock times or dates.")
    table, onsets = table[keep], onsets[keep]
    duration_col, end_col = _column(table, _DURATION_COLUMNS), _column(table, _END_COLUMNS)
    if duration_col is not None:
        durations = pd.to_numeric(table[duration_col].str.replace(",", ".", regex=False), errors="coerce").to_numpy()
    elif end_col is not None:
        durations = _clock_offsets(table[end_col], reference)[0] - onsets
    else:
        durations = np.zeros(len(onsets))
    rows, events = split_annotations(onsets, np.nan_to_num(durations), table[event_col].tolist())
    start = reference if isinstance(reference, float) else float(
        reference.hour * 3600 + reference.minute * 60 + reference.second + reference.microsecond / 1e6)
    return "Noxturnal CSV", rows, events, start


def _clock_offsets(values: pd.Series, reference=None) -> tuple[np.ndarray, float | pd.Timestamp | None]:
    """Seconds after `reference` (default: the first readable time), and the reference.

    Bare clock times (``22:30:00``; the reference is then seconds since midnight) count within
    the 24 h after the reference; dates and times (``15/01/2016 22:30:00``, day first, or ISO;
    the reference is then a timestamp) are exact. Unreadable cells are NaN.
    """
    texts = values.astype(str).str.strip()
    clock = texts.str.extract(_CLOCK_ONLY.pattern)
    readable = texts[(texts != "") & ~texts.str.startswith("[")]
    if len(readable) and clock[0][readable.index].notna().all() and not isinstance(reference, pd.Timestamp):
        seconds = (clock[0].astype(float) * 3600 + clock[1].astype(float) * 60
                   + clock[2].fillna("0").str.replace(",", ".", regex=False).astype(float)).to_numpy()
        reference = float(seconds[~np.isnan(seconds)][0]) if reference is None else reference
        return (seconds - reference) % 86400, reference
    stamps = pd.to_datetime(texts, dayfirst=True, errors="coerce", format="mixed")
    if stamps.notna().sum() == 0:
        return np.full(len(texts), np.nan), None
    reference = stamps[stamps.notna()].iloc[0] if reference is None else reference
    return (stamps - reference).dt.total_seconds().to_numpy(), reference


# ---- XML ------------------------------------------------------------------------------------------
def _read_xml(path: Path):
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(path.read_bytes(), forbid_dtd=True)
    except (DefusedXmlException, ValueError) as exc:
        raise AnnotationFileError(f"the scoring XML was refused: it declares a DTD or entities ({type(exc).__name__}); "
                                  "scoring XML never needs them.") from None
    except ParseError as exc:
        raise AnnotationFileError(f"the scoring file is not well-formed XML ({exc}).") from None
    if root.tag == "PSGAnnotation":
        return ("NSRR XML", *_nsrr(root))
    if root.tag == "CMPStudyConfig":
        return ("Profusion XML", *_profusion(root))
    raise AnnotationFileError(f"XML scoring files with root <{root.tag[:40]}> are not supported; give an NSRR XML "
                              "(<PSGAnnotation>) or a Compumedics Profusion XML (<CMPStudyConfig>).")


def _number(element, tag: str, default: float | None = None) -> float | None:
    text = element.findtext(tag)
    if text is None or not text.strip():
        return default
    try:
        return float(text)
    except ValueError:
        raise AnnotationFileError(f"the scoring XML has <{tag}>{text.strip()[:20]}</{tag}>, not a number.") from None


def _nsrr(root):
    onsets, durations, labels, nadirs, rows, start = [], [], [], [], [], None
    for event in root.iter("ScoredEvent"):
        concept = (event.findtext("EventConcept") or "").strip()
        if concept.lower() == "recording start time":
            clock = re.search(r"(\d{1,2})[.:](\d{2})[.:](\d{2})\s*$", event.findtext("ClockTime") or "")
            start = None if clock is None else float(int(clock[1]) * 3600 + int(clock[2]) * 60 + int(clock[3]))
            continue
        onset, duration = _number(event, "Start"), _number(event, "Duration", 0.0)
        if onset is None:
            raise AnnotationFileError("the NSRR XML has a <ScoredEvent> without <Start>; re-export it.")
        if "stages" in (event.findtext("EventType") or "").lower():
            stage_rows, _ = split_annotations([onset], [duration], [concept])
            rows += stage_rows or [(onset, duration, UNSCORED)]
            continue
        onsets.append(onset)
        durations.append(duration)
        labels.append(concept)
        nadirs.append(_number(event, "SpO2Nadir", np.nan))
    return rows, scored_events(onsets, durations, labels, nadirs), start


def _profusion(root):
    epoch = _number(root, "EpochLength", float(EPOCH_SEC))
    if not epoch or epoch <= 0:
        raise AnnotationFileError("the Profusion XML's <EpochLength> must be a positive number of seconds.")
    onsets, durations, labels, nadirs = [], [], [], []
    for event in root.iter("ScoredEvent"):
        onset = _number(event, "Start")
        if onset is None:
            raise AnnotationFileError("the Profusion XML has a <ScoredEvent> without <Start>; re-export it.")
        onsets.append(onset)
        durations.append(_number(event, "Duration", 0.0))
        labels.append((event.findtext("Name") or "").strip())
        nadirs.append(_number(event, "LowestSpO2", np.nan))
    rows = []
    for i, element in enumerate(root.iter("SleepStage")):
        try:
            code = int((element.text or "").strip())
        except ValueError:
            raise AnnotationFileError("the Profusion XML's <SleepStage> values must be integer codes.") from None
        rows.append((i * epoch, epoch, _PROFUSION_CODES.get(code, UNSCORED)))
    return rows, scored_events(onsets, durations, labels, nadirs), None


# ---- UCDDB text ---------------------------------------------------------------------------------
def _ucddb_pair(path: Path) -> tuple[Path | None, Path | None]:
    name = path.name.lower()
    for own, other in (("_respevt.txt", "_stage.txt"), ("_stage.txt", "_respevt.txt")):
        if name.endswith(own):
            partner = path.with_name(path.name[: -len(own)] + other)
            partner = partner if partner.is_file() else None
            return (path, partner) if own == "_respevt.txt" else (partner, path)
    clock_lines = re.search(r"(?m)^\s*\d{1,2}:\d{2}:\d{2}\s", path.read_text(errors="replace"))
    return (path, None) if clock_lines else (None, path)


def _read_ucddb(path: Path, recording_start: float | None):
    respevt, stage = _ucddb_pair(path)
    rows = []
    if stage is not None:
        codes = [line.strip() for line in stage.read_text(errors="replace").splitlines() if line.strip()]
        if not codes or not all(re.fullmatch(r"\d+", code) for code in codes):
            raise AnnotationFileError(
                "scoring files of this kind are not supported: a UCDDB *_stage.txt holds one integer stage code "
                "per line (0 wake, 1 REM, 2-5 stages 1-4, 6 artefact, 7 indeterminate).")
        rows = [(i * float(EPOCH_SEC), float(EPOCH_SEC), _UCDDB_STAGE_CODES.get(int(code), UNSCORED))
                for i, code in enumerate(codes)]
    if respevt is None:
        return rows, scored_events([], [], [])
    onsets, durations, labels, nadirs = [], [], [], []
    for line in respevt.read_text(errors="replace").splitlines():
        match = _RESPEVT_LINE.match(line)
        if match is None:
            continue  # the title, column header and ruler lines
        tokens = match[5].split()
        if tokens and not re.fullmatch(r"[\d.]+", tokens[0]):
            tokens = tokens[1:]  # the PB/CS column (periodic breathing, Cheyne-Stokes) when filled
        numbers = [float(t) if re.fullmatch(r"\d+(\.\d+)?", t) else np.nan for t in tokens[:2]] + [np.nan, np.nan]
        onsets.append(int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3]))
        durations.append(numbers[0])
        labels.append(match[4])
        nadirs.append(numbers[1])
    if not onsets and not rows:
        raise AnnotationFileError(
            "scoring files of this kind are not supported: a UCDDB *_respevt.txt lists events as "
            "'HH:MM:SS TYPE [PB/CS] DURATION LOW %DROP ...' lines, a *_stage.txt one stage code per line.")
    if onsets and recording_start is None:
        raise AnnotationFileError("the UCDDB event times are clock times, and the recording has no start time to "
                                  "place them on.")
    placed = (np.asarray(onsets, dtype=float) - (recording_start or 0.0)) % 86400
    return rows, scored_events(placed, durations, labels, nadirs)
