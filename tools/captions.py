"""Tool `caption_epochs`: SleepLM captions of a range beside the measured description."""

from __future__ import annotations

import re

from langchain.tools import ToolRuntime, tool
from langchain_core.tools import ToolException
from pydantic import BaseModel, Field

from sleeplm.terms import CaptionDomain, format_citation, value_runs
from tools.context import NightContext, TimeText, configure, night_tool_errors

# Captioning decodes text epoch by epoch: beyond one hour the answer takes minutes on a CPU.
MAX_CAPTION_EPOCHS = 120
# Beam search multiplies the decoding work by the number of beams.
MAX_BEAMS = 5

# Words that name the same finding in a caption and in a measured description, by category.
# Two texts disagree when both name a category and share none of its findings.
_TERMS = {
    "stage": {
        "W": r"\b(wake|awake|wakefulness)\b", "N1": r"\bn1\b", "N2": r"\bn2\b",
        "N3": r"\b(n3|deep sleep|slow[- ]wave)\b", "R": r"\b(rem|rapid eye)\b",
    },
    "breathing": {
        "apnea": r"\bapn(o)?ea", "hypopnea": r"\bhypopn(o)?ea",
        # The measured description says "no respiratory events" only when airflow was measured.
        "normal": r"\b(normal|regular|stable) (breathing|respiration)|\bno respiratory events\b",
    },
    "oxygen": {"desaturation": r"\bdesaturat",
               "normal": r"\b(normal|stable) (oxygen|spo2|saturation)|\bspo2 mean \d+%, lowest (9\d|100)%"},
    "heart": {
        "tachycardia": r"\btachycard", "bradycardia": r"\bbradycard", "irregular": r"\b(irregular|arrhythm)",
        "normal": r"\b(regular|normal|stable) (heart|rhythm|sinus)",
    },
    "position": {p: rf"\b{p}\b" for p in ("supine", "prone", "left", "right", "upright")},
}


class CaptionArgs(BaseModel):
    domain: CaptionDomain = Field(
        description="what to describe: 'brain' (EEG/EOG, sleep depth), 'cardiac' (heart), 'respiratory' "
        "(breathing, oxygen), 'position_muscle' (body position, chin muscle), 'stage_event' (stage and events)"
    )
    start: TimeText = Field(description="first epoch or time: clock '02:30', elapsed '3h10m', 'epoch 120', or a phrase like 'first REM period'")
    end: TimeText | None = Field(None, description="last epoch or time (inclusive), same forms; empty = just the start epoch/phrase")
    beams: int | None = Field(
        None, ge=2, le=MAX_BEAMS,
        description=f"optional beam search with this many beams (2-{MAX_BEAMS}) for SleepLM's captions; empty = "
        "greedy decoding (the released model's own choice, fastest). Only when asked for a more careful caption.",
    )


def finding_terms(text: str) -> dict[str, set[str]]:
    """Findings named in a text, by category (e.g. {"stage": {"N2"}, "breathing": {"apnea"}})."""
    lowered = text.lower()
    found = {}
    for category, patterns in _TERMS.items():
        names = {name for name, pattern in patterns.items() if re.search(pattern, lowered)}
        if names:
            found[category] = names
    return found


def disagreements(caption: str, measured: str) -> list[str]:
    """Categories where a caption and a measured description name different findings."""
    a, b = finding_terms(caption), finding_terms(measured)
    return [
        f"{category}: SleepLM says {', '.join(sorted(a[category]))}, measurements say {', '.join(sorted(b[category]))}"
        for category in sorted(a.keys() & b.keys())
        if not a[category] & b[category]
    ]


def consistency_note(tool_calls: list[dict], answer: str) -> str:
    """Text to add to an answer that leaves out a caption/measurement disagreement a tool flagged ("" otherwise).

    Shows both sides: SleepLM's caption and the measured description, with the flag.
    """
    if "disagree" in answer.lower():
        return ""
    lines = []
    for call in tool_calls:
        result = call.get("result")
        if call.get("name") != "caption_epochs" or call.get("status") != "success" or not isinstance(result, dict):
            continue
        for flag in result.get("disagreements") or []:
            caption = next(iter(result.get("captions") or []), {}).get("text", "")
            lines.append(f"- {flag}. SleepLM's caption: \"{caption}\"; measured: \"{result['measured']['text']}\".")
    return "\n\nSleepLM and the measurements disagree here:\n" + "\n".join(lines) if lines else ""


def caption_runs(captions: list[str], first: int) -> list[tuple[int, int, str]]:
    """Consecutive identical captions joined: (first_epoch, last_epoch, caption)."""
    return [(first + start, first + end - 1, text) for start, end, text in value_runs(captions)]


def _measured_text(night: NightContext, domain: str, first: int, last: int) -> dict:
    from sleeplm.report.describe import describe_epochs

    return describe_epochs(night.rec, domain, first, last, analysis=night.analysis)


@tool("caption_epochs", args_schema=CaptionArgs)
@night_tool_errors
def caption_epochs(domain: str, start: str, end: str | None = None, beams: int | None = None, *,
                   runtime: ToolRuntime[NightContext]) -> dict:
    """Describe what happens in an epoch or a short range (at most 120 epochs = 1 h) in one
    domain: SleepLM's own caption of the signals (when its weights are loaded) beside the
    description measured from the signals, with a flag where they disagree. Use for
    'what happened at 02:30', 'describe the breathing in epoch 120', 'what was my heart doing in
    the first REM period'. SleepLM decodes greedily unless `beams` asks for a beam search."""
    night = runtime.context
    first, last = night.span(start, end)
    n = last - first + 1
    if n > MAX_CAPTION_EPOCHS:
        raise ToolException(
            f"That range is {n} epochs; caption at most {MAX_CAPTION_EPOCHS} epochs (1 h) at a time. "
            "Use night_summary or list_events for longer periods, or pick a shorter range."
        )
    where = format_citation(night.cite(first, last))
    measured = _measured_text(night, domain, first, last)
    result = {
        "tool": "caption_epochs",
        "domain": domain,
        "range": night.cite(first, last),
        "measured": {"source": "measured", "text": measured.get("text")},
    }
    if night.model is None:
        result.update(
            source="measured",
            findings=[
                f"SleepLM captions are unavailable ({night.model_status}); measured description only.",
                f"Measured ({domain}, {where}): {measured.get('text')}",
            ],
        )
        return result
    background = night.captions.get(domain)  # the whole night's greedy captions, when a background job made them
    if background is not None and beams is None:
        captions = background[first : last + 1]
    else:
        captions = list(night.model.caption(night.rec.epochs[first : last + 1], domain, beams=beams))
    runs = caption_runs(captions, first)
    flags = sorted({flag for _, _, text in runs for flag in disagreements(text, measured.get("text") or "")})
    result.update(
        source="sleeplm + measured",
        decoding="greedy" if beams is None else f"beam search, {beams} beams",
        captions=[{"source": "sleeplm", "text": text, **night.cite(a, b)} for a, b, text in runs],
        disagreements=flags,
        findings=[f"SleepLM ({domain}, {format_citation(night.cite(a, b))}): {text}" for a, b, text in runs[:6]]
        + [f"Measured ({domain}, {where}): {measured.get('text')}"]
        + ([f"SleepLM and the measurements disagree on {flag}." for flag in flags] or ["SleepLM and the measurements do not contradict each other."]),
    )
    return result


configure(caption_epochs)
