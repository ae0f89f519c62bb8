"""Tool `concept_timeline`: any concept in plain words, scored epoch by epoch across the night.

With SleepLM, an epoch's score is the cosine similarity of its signal embedding with the
concept's text embedding (SleepLM's shared signal-text space), smoothed over a few epochs; the
top periods are the longest-lasting stretches of the night's highest scores. Without SleepLM
(no weights, or embeddings still being computed) the measured fallback of `find_epochs` reads
the concept for measurable criteria (`tools.measured_search`): the score is the share of those
criteria an epoch meets, and the periods are the measured episodes. Several concepts are
overlaid in one figure.
"""

from __future__ import annotations

import numpy as np
from langchain.tools import ToolRuntime, tool
from langchain_core.tools import ToolException
from pydantic import BaseModel, Field
from scipy import ndimage

from sleeplm.report.plots import plot_concept_timeline
from sleeplm.terms import format_citation, runs_of
from tools.context import NightContext, configure, night_tool_errors, rounded
from tools.measured_search import UNDERSTOOD, measured_search, query_criteria
from tools.retrieval import fallback_reason

__all__ = ["concept_timeline", "sleeplm_scores", "smooth", "top_periods", "TOP_SHARE", "MAX_CONCEPTS"]

MAX_CONCEPTS = 4
# The night's highest-scoring tenth of epochs are candidates for a top period.
TOP_SHARE = 0.10
PERIOD_GAP_EPOCHS = 2


class TimelineArgs(BaseModel):
    concepts: list[str] = Field(min_length=1, max_length=MAX_CONCEPTS,
                                description="1-4 things to look for, in plain words, e.g. ['snoring with desaturation'], "
                                "['REM with rapid eye movements', 'alpha intrusion']; several are overlaid")
    smooth_epochs: int = Field(5, ge=1, le=41, description="epochs averaged for the curve (5 = 2.5 min)")
    top_k: int = Field(3, ge=1, le=10, description="top periods to cite per concept (1-10)")


def smooth(values: np.ndarray, epochs: int) -> np.ndarray:
    """Centred moving average over `epochs` epochs (edges use the nearest value)."""
    return ndimage.uniform_filter1d(np.asarray(values, dtype=np.float64), size=max(1, int(epochs)), mode="nearest")


def sleeplm_scores(model, embeddings: np.ndarray, concepts: list[str]) -> np.ndarray:
    """Cosine similarity [n_epochs, n_concepts] of each epoch's signal embedding with each concept's text."""
    return np.asarray(embeddings, dtype=np.float32) @ model.encode_text(concepts).T


def top_periods(curve: np.ndarray, top_k: int, share: float = TOP_SHARE) -> list[tuple[int, int, float]]:
    """(first, last, peak) of the stretches where `curve` is in its top `share`, highest peak first."""
    finite = np.isfinite(curve)
    if not finite.any():
        return []
    cut = np.quantile(curve[finite], 1 - share)
    # Never the night's floor: a curve that is mostly at its minimum has only its raised parts as periods.
    runs = runs_of(finite & (curve >= cut) & (curve > np.nanmin(curve)), max_gap=PERIOD_GAP_EPOCHS)
    ranked = sorted(((a, b, float(np.nanmax(curve[a : b + 1]))) for a, b in runs), key=lambda p: -p[2])
    return ranked[:top_k]


def _sleeplm_concept(night: NightContext, concept: str, curve: np.ndarray, top_k: int) -> dict:
    mean, spread = float(np.mean(curve)), float(np.std(curve)) or 1.0
    periods = []
    for first, last, peak in top_periods(curve, top_k):
        periods.append({**night.cite(first, last), "peak_similarity": rounded(peak, 3),
                        "above_night_mean_sd": rounded((peak - mean) / spread, 1)})
    return {"concept": concept, "source": "sleeplm", "scored_by": "SleepLM signal-text similarity (cosine)",
            "night_mean_similarity": rounded(mean, 3), "periods": periods}


def _measured_concept(night: NightContext, concept: str, smooth_epochs: int, top_k: int) -> tuple[dict, np.ndarray | None]:
    criteria = query_criteria(night, concept)
    usable = [c for c in criteria if c.mask is not None]
    if not usable:
        why = [c.missing for c in criteria if c.missing] or [f"the measured search understands {UNDERSTOOD}"]
        return {"concept": concept, "source": "measured (fallback)", "scored_by": None, "periods": [],
                "not_scored": "; ".join(why)}, None
    curve = smooth(np.mean([c.mask.astype(float) for c in usable], axis=0), smooth_epochs)
    search = measured_search(night, concept, top_k)
    periods = [{**night.cite(e["first"], e["last"]), **({"measured": e["values"]} if "values" in e else {})}
               for e in search["episodes"]]
    item = {"concept": concept, "source": "measured (fallback)", "scored_by": search["searched"], "periods": periods}
    if search["missing"]:
        item["not_scored"] = "; ".join(search["missing"])
    return item, curve


def _period_phrase(item: dict) -> str:
    if not item["periods"]:
        return f"'{item['concept']}': no period found" + (f" ({item['not_scored']})" if item.get("not_scored") else "") + "."
    cited = []
    for period in item["periods"]:
        text = format_citation(period)
        if "peak_similarity" in period:
            text += f", peak similarity {period['peak_similarity']} ({period['above_night_mean_sd']} SD above the night's mean)"
        cited.append(text)
    return f"'{item['concept']}' is strongest at " + "; ".join(cited) + "."


@tool("concept_timeline", args_schema=TimelineArgs, response_format="content_and_artifact")
@night_tool_errors
def concept_timeline(concepts: list[str], smooth_epochs: int = 5, top_k: int = 3, *,
                     runtime: ToolRuntime[NightContext]):
    """Score one or more concepts in plain words ('snoring with desaturation', 'REM with rapid
    eye movements', 'alpha intrusion') epoch by epoch across the whole night and draw them as
    curves (overlaid), citing the top periods with clock time, elapsed time and epochs. Uses
    SleepLM's signal-text similarity; without SleepLM it scores the concept from the
    measurements and says so. Use for 'show me ...' or 'when did ... happen' about anything
    that is not a measured event (apneas, hypopneas, desaturations, arousals: use list_events)."""
    night = runtime.context
    concepts = [c.strip() for c in concepts if isinstance(c, str) and c.strip()]
    if not concepts:
        raise ToolException("Give at least one concept in plain words, e.g. ['snoring with desaturation'].")
    curves: dict[str, np.ndarray] = {}
    if night.model is not None and night.embeddings is not None:
        scores = sleeplm_scores(night.model, night.embeddings, concepts)
        items = []
        for index, concept in enumerate(concepts):
            curves[concept] = smooth(scores[:, index], smooth_epochs)
            items.append(_sleeplm_concept(night, concept, curves[concept], top_k))
        source, ylabel = "sleeplm", "SleepLM similarity (smoothed)"
        lead = (f"SleepLM similarity of every epoch with {len(concepts)} concept(s), smoothed over {smooth_epochs} "
                "epochs; the periods are where the night's highest tenth of scores cluster.")
        note = "Similarity ranks epochs within this night; it is not a probability or a diagnosis."
    else:
        reason = fallback_reason(night)
        items = []
        for concept in concepts:
            item, curve = _measured_concept(night, concept, smooth_epochs, top_k)
            items.append(item)
            if curve is not None:
                curves[concept] = curve
        source, ylabel = "measured (fallback)", "share of measured criteria met (smoothed)"
        lead = f"{reason}; each concept was scored from the measurements instead (its measured criteria per epoch)."
        note = "Measured fallback: only what the measurements can test is scored."
    findings = [lead] + [_period_phrase(item) for item in items]
    periods = {item["concept"]: [(p["epoch_start"], p["epoch_end"]) for p in item["periods"]] for item in items}
    figure = None
    if curves:
        figure = plot_concept_timeline(night.rec, curves, periods, ylabel, night.hypnogram, night.stage_source)
        findings.append("A timeline figure of the concept score(s) across the night is shown to the user.")
    result = {"tool": "concept_timeline", "source": source, "smooth_epochs": smooth_epochs, "concepts": items,
              "findings": findings, "note": note}
    if source != "sleeplm":
        result["fallback_reason"] = reason
    return result, figure


configure(concept_timeline)
