"""Annotation labels -> reference scoring: sleep stages per epoch and the tidy table of scored events.

Scoring software writes the same facts in many styles and languages ("Sleep stage 2", "N2",
"Stage 2 sleep|2", "Éveil", "Obstructive Apnea", "Obs. Hypopnea", "A. Obstructive", "HYP-O",
"Désat"...). This module maps them onto the stage labels of `sleeplm.terms.STAGES` (stage 4
merged into N3, per AASM 2007) and onto event kinds and subtypes. Labels it does not know are kept
as kind ``"other"`` with their (scrubbed) text. Every scoring reader (`sleeplm.io.scoring`) and the
EDF+ annotations of a recording end in the same events table, `SCORED_EVENT_COLUMNS`.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from sleeplm.io.deid import scrub_text
from sleeplm.io.recording import EPOCH_SEC, STAGES, ReferenceScoring

__all__ = [
    "SCORED_EVENT_COLUMNS", "parse_stage_label", "parse_event_label", "scored_events", "split_annotations",
    "reference_from_annotations", "stages_on_grid",
]

logger = logging.getLogger(__name__)

# Stage token (after stripping "sleep stage"/"stage"/"sleep" words) -> stage label.
_STAGE_TOKENS = {
    "w": "W", "wake": "W", "awake": "W", "0": "W", "éveil": "W", "eveil": "W",
    "1": "N1", "n1": "N1", "s1": "N1",
    "2": "N2", "n2": "N2", "s2": "N2",
    "3": "N3", "n3": "N3", "s3": "N3", "4": "N3", "n4": "N3", "s4": "N3", "sws": "N3",
    "r": "R", "rem": "R", "5": "R", "paradoxal": "R",
    # Compumedics/NSRR-style codes after the bar ("Stage 2 sleep|NREM2"), also written with a space.
    **{f"nrem{sep}{k}": stage for k, stage in (("1", "N1"), ("2", "N2"), ("3", "N3"), ("4", "N3")) for sep in ("", " ")},
    "?": "?", "unknown": "?", "unscored": "?", "movement time": "?", "movement": "?", "mt": "?", "m": "?",
    "artefact": "?", "artifact": "?", "no stage": "?", "nostage": "?",
}
_STAGE_WORDS = re.compile(r"\b(sleep\s*stage|stage|sleep)\b")

# (pattern on the lower-cased label, kind, subtype). First match wins, so specific before general.
# English, Noxturnal's French ("A. Obstructive", "Hypopnée", "Désat", "Micro-éveil", "MJ") and
# UCDDB's codes ("APNEA-O", "HYP-C").
_EVENT_RULES: tuple[tuple[str, str, str], ...] = (
    (r"obstructive\s*hypopn|obs\.?\s*hypopn|hypopn.*obstructi|\bhyp-o\b", "hypopnea", "obstructive"),
    (r"central\s*hypopn|hypopn.*central|\bhyp-c\b", "hypopnea", "central"),
    (r"mixed\s*hypopn|hypopn.*mix|\bhyp-m\b", "hypopnea", "mixed"),
    (r"hypopn", "hypopnea", "unspecified"),
    (r"obstructive\s*apn|obs\.?\s*apn|\boa\b|apn.*obstructi|\bapnea-o\b|^a\.\s*obstructi", "apnea", "obstructive"),
    (r"central\s*apn|\bca\b|apn.*central|\bapnea-c\b|^a\.\s*central", "apnea", "central"),
    (r"mixed\s*apn|apn.*mix|\bapnea-m\b|^a\.\s*mixte", "apnea", "mixed"),
    (r"apn", "apnea", "unspecified"),
    (r"\brera\b|respiratory effort related arousal", "rera", ""),
    (r"d[eé]sat|spo2.*(drop|fall)|oxygen desaturation", "desaturation", ""),
    (r"periodic\s*(limb|leg)|\bplm", "limb_movement", "periodic"),
    (r"limb\s*mov|leg\s*mov|\blm\b|\bmj\b|mouvement.*jambe", "limb_movement", ""),
    (r"arousal|\barou|micro-?\s*[eé]veil", "arousal", ""),
    (r"tachycard", "tachycardia", ""),
    (r"bradycard", "bradycardia", ""),
    (r"snor|ronfl", "snore", ""),
    (r"lights?\s*(off|out)", "lights_off", ""),
    (r"lights?\s*on", "lights_on", ""),
    (r"artefact|artifact", "artefact", ""),
)
# Body position labels -> the position (subtype of kind "position_change"), as in `POSITION_CODES`.
_POSITION_RULES: tuple[tuple[str, str], ...] = (
    (r"supine|\bback\b|^dos$|dorsal", "Supine"),
    (r"prone|\bfront\b|^ventre$|stomach", "Prone"),
    (r"upright|sitting|^debout$|^assis$", "Upright"),
    (r"left\b|^gauche$", "Left"),
    (r"right\b|^droite$", "Right"),
)
_POSITION_LABEL = re.compile(r"position|supine|prone|upright|left side|right side|^(left|right|back|front|dos|ventre|"
                             r"debout|assis|gauche|droite)$")

# The tidy events table of every scoring source (EDF+ annotations, NSRR/Profusion XML, UCDDB,
# Noxturnal...): onset and duration in seconds from the recording start, kind (an event kind of
# `sleeplm.terms.SCORED_EVENT_KINDS`), subtype ("obstructive", "central", "mixed", "unspecified"
# for apneas and hypopneas, "periodic" for limb movements, the position for position changes, else
# ""), label (the scorer's text, scrubbed of identifiers) and spo2_nadir (the lowest SpO2 in %
# that the file gives for a desaturation, else NaN).
SCORED_EVENT_COLUMNS = ("onset_s", "duration_s", "kind", "subtype", "label", "spo2_nadir")

def parse_stage_label(label: str) -> str | None:
    """Stage label (``"W","N1","N2","N3","R","?"``) of a stage annotation, or None if it is not one.

    Examples
    --------
    >>> parse_stage_label("Sleep stage 4"), parse_stage_label("Stage 2 sleep|2"), parse_stage_label("REM")
    ('N3', 'N2', 'R')
    >>> parse_stage_label("Stage 2 sleep|NREM2"), parse_stage_label("NREM 3"), parse_stage_label("Arousal|Arousal ()")
    ('N2', 'N3', None)
    """
    text = label.strip().lower().replace("_", " ")
    if "|" in text:  # "Stage 2 sleep|2": the part after the bar is the code, else the words before it name the stage
        for part in reversed(text.split("|")):
            stage = parse_stage_label(part) if part.strip() else None
            if stage is not None:
                return stage
        return None
    has_stage_word = bool(_STAGE_WORDS.search(text))
    token = re.sub(r"\s+", " ", _STAGE_WORDS.sub(" ", text)).strip(" :-_")
    # A bare code ("2", "?", "m") is a stage only when it is the whole label or follows a stage word;
    # a bare "Artefact" is an artefact mark (an event), "Sleep stage artefact" an unscored epoch.
    if token in _STAGE_TOKENS and (has_stage_word or (token == text and token not in ("artefact", "artifact"))):
        return _STAGE_TOKENS[token]
    return None


def parse_event_label(label: str) -> tuple[str, str]:
    """``(kind, subtype)`` of an event annotation; unknown labels give ``("other", "")``.

    Examples
    --------
    >>> parse_event_label("Obstructive Apnea"), parse_event_label("SpO2 desaturation")
    (('apnea', 'obstructive'), ('desaturation', ''))
    >>> parse_event_label("A. Obstructive"), parse_event_label("HYP-C"), parse_event_label("Dos")
    (('apnea', 'obstructive'), ('hypopnea', 'central'), ('position_change', 'Supine'))
    """
    text = label.strip().lower()
    for pattern, kind, subtype in _EVENT_RULES:
        if re.search(pattern, text):
            return kind, subtype
    if _POSITION_LABEL.search(text):
        return "position_change", next((name for pattern, name in _POSITION_RULES if re.search(pattern, text)), "")
    return "other", ""


def scored_events(onsets_s, durations_s, labels, spo2_nadir=None) -> pd.DataFrame:
    """The tidy events table (`SCORED_EVENT_COLUMNS`) of event annotations.

    Parameters
    ----------
    onsets_s, durations_s : seconds from the recording start (a NaN duration is 0).
    labels : the scorer's texts; kind and subtype come from `parse_event_label`, and only the
        scrubbed text (`sleeplm.io.deid.scrub_text`) is kept: free text may identify the patient.
    spo2_nadir : lowest SpO2 (%) per event where the file gives it (NaN elsewhere), or None.

    Examples
    --------
    >>> scored_events([12.0], [20.0], ["SpO2 desaturation"], [88.0]).to_dict("records")
    [{'onset_s': 12.0, 'duration_s': 20.0, 'kind': 'desaturation', 'subtype': '', 'label': 'SpO2 desaturation', 'spo2_nadir': 88.0}]
    """
    labels = [str(label) for label in labels]
    kinds = [parse_event_label(label) for label in labels]
    nadir = np.full(len(labels), np.nan) if spo2_nadir is None else np.asarray(spo2_nadir, dtype=float)
    return pd.DataFrame({
        "onset_s": np.asarray(onsets_s, dtype=float).reshape(-1),
        "duration_s": np.nan_to_num(np.asarray(durations_s, dtype=float)).reshape(-1),
        "kind": [kind for kind, _ in kinds],
        "subtype": [subtype for _, subtype in kinds],
        "label": [scrub_text(label) for label in labels],
        "spo2_nadir": nadir.reshape(-1),
    }, columns=list(SCORED_EVENT_COLUMNS))


def split_annotations(onsets_s, durations_s, labels) -> tuple[list[tuple[float, float, str]], pd.DataFrame]:
    """Stage rows ``(onset_s, duration_s, stage)`` and the events table of mixed annotations.

    A label that `parse_stage_label` reads as a stage is a stage row; every other label is an event.

    Examples
    --------
    >>> rows, events = split_annotations([0, 10], [30, 5], ["Sleep stage 2", "Arousal"])
    >>> rows, events["kind"].tolist()
    ([(0.0, 30.0, 'N2')], ['arousal'])
    """
    onsets = np.asarray(onsets_s, dtype=float).reshape(-1)
    durations = np.nan_to_num(np.asarray(durations_s, dtype=float)).reshape(-1)
    labels = [str(label) for label in labels]
    stages = [parse_stage_label(label) for label in labels]
    stage_rows = [(float(o), float(d), st) for o, d, st in zip(onsets, durations, stages) if st is not None]
    is_event = np.array([st is None for st in stages], dtype=bool)
    events = scored_events(onsets[is_event], durations[is_event], [lab for lab, ev in zip(labels, is_event) if ev])
    return stage_rows, events


def reference_from_annotations(onsets_s, durations_s, labels, n_epochs: int,
                               source: str = "EDF+ annotations in the recording") -> ReferenceScoring | None:
    """Build the reference scoring from annotation triplets.

    Parameters
    ----------
    onsets_s, durations_s : seconds from recording start. A stage annotation with a duration of
        0 or NaN lasts one scoring epoch: the most common step between stage onsets (30 s when
        there is a single one).
    labels : raw annotation texts. Event labels are kept de-identified (`sleeplm.io.deid.scrub_text`);
        the raw text is not stored.
    n_epochs : epochs in the recording; stages are mapped onto this 30-s grid.
    source : where the scoring comes from, as the preflight names it (`ReferenceScoring.source`).

    Returns
    -------
    ReferenceScoring, or None when there is no annotation at all. Stages are None when no stage
    annotation exists. Scorings in any epoch length (20-s R&K, 30-s AASM, 5-s...) map onto the
    30-s grid by majority of scored time (`stages_on_grid`): an epoch is ``"?"`` only where less
    than half of it was scored (or where most of it was scored as movement/unknown).

    Examples
    --------
    >>> ref = reference_from_annotations([0, 30, 60, 75], [30, 30, 30, 12],
    ...                                  ["Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Obstructive Apnea"], 4)
    >>> ref.stages.tolist()              # the fourth epoch has no stage annotation
    ['W', 'N1', 'N2', '?']
    >>> ref.events[["onset_s", "duration_s", "kind", "subtype"]].to_dict("records")
    [{'onset_s': 75.0, 'duration_s': 12.0, 'kind': 'apnea', 'subtype': 'obstructive'}]
    >>> reference_from_annotations([], [], [], 4) is None
    True
    """
    if len(labels) == 0:
        return None
    stage_rows, events = split_annotations(onsets_s, durations_s, labels)
    logger.debug("annotations: %d stage, %d event", len(stage_rows), len(events))
    return ReferenceScoring(stages=stages_on_grid(stage_rows, n_epochs) if stage_rows else None, events=events,
                            source=source)


def stages_on_grid(stage_rows, n_epochs: int) -> np.ndarray:
    """Stage per 30-s epoch from ``(onset_s, duration_s, stage)`` rows scored in any epoch length.

    Each 30-s epoch takes the stage that covers most of its scored time (R&K S3 and S4 were
    already merged into N3 by `parse_stage_label`, so their time adds up); ties go to the stage
    scored first within the epoch. An epoch less than half covered by stage annotations is
    ``"?"``. A duration of 0 means one scoring epoch (the most common step between onsets).

    Examples
    --------
    >>> rows = [(0, 20, "W"), (20, 20, "N1"), (40, 20, "N2")]  # 20-s R&K epochs, then none
    >>> stages_on_grid(rows, 3).tolist()
    ['W', 'N2', '?']
    """
    rows = sorted(stage_rows)
    onsets = np.array([r[0] for r in rows])
    steps = np.round(np.diff(onsets), 3)
    steps = steps[steps > 0]
    default = float(pd.Series(steps).mode().iloc[0]) if steps.size else float(EPOCH_SEC)
    names = (*STAGES, "?")
    cover = np.zeros((n_epochs, len(names)))
    first_seen = np.full((n_epochs, len(names)), np.inf)
    for onset, duration, stage in rows:
        end = onset + (duration if duration > 0 else default)
        k = names.index(stage)
        for epoch in range(max(int(onset // EPOCH_SEC), 0), min(int(np.ceil(end / EPOCH_SEC)), n_epochs)):
            lo, hi = max(onset, epoch * EPOCH_SEC), min(end, (epoch + 1) * EPOCH_SEC)
            if hi > lo:
                cover[epoch, k] += hi - lo
                first_seen[epoch, k] = min(first_seen[epoch, k], lo)
    stages = np.full(n_epochs, "?", dtype="<U2")
    scored = cover.sum(axis=1) >= EPOCH_SEC / 2
    # Most time first, then the earliest-scored stage among equals.
    order = np.lexsort((first_seen, -cover), axis=1)[:, 0] if n_epochs else np.array([], dtype=int)
    stages[scored] = np.array(names)[order[scored]]
    return stages
