"""Tool `find_epochs`: SleepLM text-to-signal retrieval, with a measured fallback."""

from __future__ import annotations

import numpy as np
from langchain.tools import ToolRuntime, tool
from pydantic import BaseModel, Field

from sleeplm.io.recording import EPOCH_SEC
from sleeplm.terms import CaptionDomain, format_citation, runs_of
from tools.context import NightContext, configure, night_tool_errors, rounded
from tools.measured_search import measured_search



class FindArgs(BaseModel):
    query: str = Field(description="what to look for, in plain words, e.g. 'REM with rapid eye movements', 'loud snoring with desaturation'")
    domain: CaptionDomain | None = Field(None, description="optional domain to search in: brain, cardiac, respiratory, position_muscle, stage_event")
    top_k: int = Field(5, ge=1, le=20, description="how many episodes to return (1-20)")


def merge_hits(hits: list[tuple[int, float]], max_gap: int = 1) -> list[dict]:
    """Join retrieved epochs closer than `max_gap` epochs into episodes, best score first."""
    if not hits:
        return []
    epochs = np.array([epoch for epoch, _ in hits])
    scores = np.array([score for _, score in hits], dtype=float)
    mask = np.zeros(epochs.max() + 1, dtype=bool)
    mask[epochs] = True
    episodes = [
        {"first": first, "last": last, "score": float(scores[(epochs >= first) & (epochs <= last)].max())}
        for first, last in runs_of(mask, max_gap)
    ]
    return sorted(episodes, key=lambda e: -e["score"])


def fallback_reason(night: NightContext) -> str:
    if night.model is None:
        return f"SleepLM retrieval is unavailable ({night.model_status})"
    return f"SleepLM embeddings are still being computed ({night.embedding_progress:.0%} done)"


@tool("find_epochs", args_schema=FindArgs)
@night_tool_errors
def find_epochs(query: str, domain: str | None = None, top_k: int = 5, *, runtime: ToolRuntime[NightContext]) -> dict:
    """Find the moments of the night that best match a description in plain words
    ('REM with rapid eye movements', 'loud snoring with desaturation', 'restless sleep'), using
    SleepLM signal-text retrieval; adjacent matching epochs are merged into episodes, each cited
    with clock time, elapsed time and epochs. Without SleepLM it searches the measurements instead
    (eye movements, oxygen, heart rate, flow flattening/snoring, muscle bursts, events, stages,
    positions) and says which criterion it used."""
    night = runtime.context
    if night.model is not None and night.embeddings is not None:
        hits = night.model.retrieve(query, night.embeddings, top_k=top_k * 4, domain=domain)
        episodes = merge_hits([(int(e), float(s)) for e, s in hits])[:top_k]
        items = [{**night.cite(e["first"], e["last"]), "score": rounded(e["score"], 3)} for e in episodes]
        findings = [f"SleepLM's best matches for '{query}':"] + [
            f"{format_citation(night.cite(e['first'], e['last']))}, similarity {rounded(e['score'], 3)}." for e in episodes
        ]
        return {"tool": "find_epochs", "source": "sleeplm", "query": query, "findings": findings, "episodes": items,
                "note": "Similarity ranks epochs within this night; it is not a probability or a diagnosis."}
    reason = fallback_reason(night)
    search = measured_search(night, query, top_k)
    findings = [f"{reason}; searched the measurements instead: {search['searched']}."]
    findings += [f"Not searchable: {why}." for why in search["missing"]]
    episodes = []
    for item in search["episodes"]:
        first, last = item["first"], item["last"]
        line = f"{format_citation(night.cite(first, last))} ({rounded((last - first + 1) * EPOCH_SEC / 60)} min"
        if "values" in item:
            line += f"; strongest {item['values']['extreme']} {item['values']['unit']}"
        findings.append(line + ").")
        episodes.append({**night.cite(first, last), **({"measured": item["values"]} if "values" in item else {})})
    if not episodes:
        findings.append(f"No matching episodes found for '{query}'.")
    return {
        "tool": "find_epochs",
        "source": "measured (fallback)",
        "query": query,
        "fallback_reason": reason,
        "searched": search["searched"],
        "criteria": search["criteria"],
        "findings": findings,
        "episodes": episodes,
    }


configure(find_epochs)
