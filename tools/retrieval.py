"""Tool `find_epochs`: SleepLM text-to-signal retrieval, with a measured fallback."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from langchain.tools import ToolRuntime, tool
from pydantic import BaseModel, Field

from sleeplm.recording import EPOCH_SEC, POSITION_CODES
from tools.context import (
    NightContext, configure, night_tool_errors, phrase_citation, position_per_epoch, rounded, runs_of,
)

Domain = Literal["brain", "cardiac", "respiratory", "position_muscle", "stage_event"]

# Events less than a minute apart form one episode (clusters of apneas are one finding).
EVENT_MERGE_GAP_EPOCHS = 2

# Per-epoch EOG power in the rapid-eye-movement band (uV^2), from sleeplm.features.
EYE_MOVEMENT_FEATURE = "brain_eog_rapid_power_uv2"

# Measured fallback: query words -> event kinds or stages that answer them.
_EVENT_WORDS = [
    (r"apn(o)?ea|pause|stopp?ed breathing|not breathing", ("apnea",)),
    (r"hypopn(o)?ea|shallow", ("hypopnea",)),
    (r"respirat|breath", ("apnea", "hypopnea")),
    (r"desat|oxygen|spo2|saturation", ("desaturation",)),
    (r"arousal", ("arousal",)),
    (r"tachycard|fast heart|racing", ("tachycardia",)),
    (r"bradycard|slow heart", ("bradycardia",)),
]
_STAGE_WORDS = [(r"\brem\b|rapid eye|dream", "R"), (r"deep|\bn3\b|slow[- ]wave", "N3"), (r"\bn2\b|spindle", "N2"),
                (r"\bn1\b", "N1"), (r"wake|awake", "W")]
_POSITION_WORDS = {name.lower(): code for code, name in POSITION_CODES.items() if code >= 0}


class FindArgs(BaseModel):
    query: str = Field(description="what to look for, in plain words, e.g. 'REM with rapid eye movements', 'loud snoring with desaturation'")
    domain: Domain | None = Field(None, description="optional domain to search in: brain, cardiac, respiratory, position_muscle, stage_event")
    top_k: int = Field(5, ge=1, le=20, description="how many episodes to return (1-20)")


def merge_hits(hits: list[tuple[int, float]], max_gap: int = 1) -> list[dict]:
    """Join retrieved epochs closer than `max_gap` epochs into episodes, best score first."""
    episodes: list[dict] = []
    for epoch, score in sorted(hits):
        if episodes and epoch - episodes[-1]["last"] <= max_gap + 1:
            episodes[-1]["last"] = epoch
            episodes[-1]["score"] = max(episodes[-1]["score"], score)
        else:
            episodes.append({"first": epoch, "last": epoch, "score": score})
    return sorted(episodes, key=lambda e: -e["score"])


def _rank_rem_by_eye_movements(night: NightContext, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Order REM runs by measured rapid eye-movement power, when the EOG was measured."""
    features = getattr(night.analysis, "features", None)
    if features is None or EYE_MOVEMENT_FEATURE not in features or features[EYE_MOVEMENT_FEATURE].isna().all():
        return runs
    values = features[EYE_MOVEMENT_FEATURE].to_numpy(dtype=float)
    return sorted(runs, key=lambda r: -np.nanmean(values[r[0] : r[1] + 1]))


def measured_search(night: NightContext, query: str, top_k: int) -> tuple[list[tuple[int, int]], str]:
    """Episodes answering `query` from measured events, stages or position; and what was searched."""
    q = query.lower()
    n = night.rec.n_epochs
    for pattern, kinds in _EVENT_WORDS:
        if re.search(pattern, q):
            events = night.require_analysis().events
            events = events[events["kind"].isin(kinds)]
            mask = np.zeros(n, dtype=bool)
            for start_s, end_s in zip(events["start_s"], events["end_s"]):
                mask[int(start_s // EPOCH_SEC) : int(np.ceil(end_s / EPOCH_SEC))] = True
            runs = runs_of(mask, max_gap=EVENT_MERGE_GAP_EPOCHS)
            # Densest episodes first: most event-epochs per run.
            runs.sort(key=lambda r: -(r[1] - r[0]))
            return runs[:top_k], f"measured {' and '.join(kinds)} events"
    hypnogram = night.hypnogram
    for pattern, stage in _STAGE_WORDS:
        if re.search(pattern, q):
            if hypnogram is None:
                return [], "sleep stages (none available)"
            runs = runs_of(hypnogram == stage)
            runs.sort(key=lambda r: -(r[1] - r[0]))
            if stage == "R" and re.search(r"eye", q):
                runs = _rank_rem_by_eye_movements(night, runs)
            return runs[:top_k], f"stage {stage} epochs ({night.stage_source})"
    for word, code in _POSITION_WORDS.items():
        if re.search(rf"\b{word}\b", q):
            positions = position_per_epoch(night)
            if positions is None:
                return [], "body position (no position channel)"
            runs = sorted(runs_of(positions == code), key=lambda r: -(r[1] - r[0]))
            return runs[:top_k], f"{word} position epochs"
    return [], "nothing: the measured fallback understands events, stages and body positions only"


def _fallback_reason(night: NightContext) -> str:
    if night.model is None:
        return f"SleepLM retrieval is unavailable ({night.model_status})"
    return f"SleepLM embeddings are still being computed ({night.embedding_progress:.0%} done)"


@tool("find_epochs", args_schema=FindArgs)
@night_tool_errors
def find_epochs(query: str, domain: str | None = None, top_k: int = 5, *, runtime: ToolRuntime[NightContext]) -> dict:
    """Find the moments of the night that best match a description in plain words
    ('REM with rapid eye movements', 'loud snoring with desaturation', 'restless sleep'), using
    SleepLM signal-text retrieval; adjacent matching epochs are merged into episodes, each cited
    with clock time, elapsed time and epochs. Without SleepLM it searches the measured events,
    stages and positions instead and says so."""
    night = runtime.context
    if night.model is not None and night.embeddings is not None:
        hits = night.model.retrieve(query, night.embeddings, top_k=top_k * 4, domain=domain)
        episodes = merge_hits([(int(e), float(s)) for e, s in hits])[:top_k]
        items = [{**night.cite(e["first"], e["last"]), "score": rounded(e["score"], 3)} for e in episodes]
        findings = [f"SleepLM's best matches for '{query}':"] + [
            f"{phrase_citation(night.cite(e['first'], e['last']))}, similarity {rounded(e['score'], 3)}." for e in episodes
        ]
        return {"tool": "find_epochs", "source": "sleeplm", "query": query, "findings": findings, "episodes": items,
                "note": "Similarity ranks epochs within this night; it is not a probability or a diagnosis."}
    reason = _fallback_reason(night)
    runs, searched = measured_search(night, query, top_k)
    findings = [f"{reason}; searched {searched} instead."]
    if runs:
        findings += [f"{phrase_citation(night.cite(a, b))} ({rounded((b - a + 1) * EPOCH_SEC / 60)} min)." for a, b in runs]
    else:
        findings.append(f"No matching episodes found for '{query}'.")
    return {
        "tool": "find_epochs",
        "source": "measured (fallback)",
        "query": query,
        "fallback_reason": reason,
        "searched": searched,
        "findings": findings,
        "episodes": [night.cite(a, b) for a, b in runs],
    }


configure(find_epochs)
