"""Tool `recording_overview`: what is in the loaded night and which sources can answer."""

from __future__ import annotations

from langchain.tools import ToolRuntime, tool

from sleeplm.io.channels import EXTRA_SIGNALS
from sleeplm.io.recording import EPOCH_SEC, format_elapsed
from tools.context import NightContext, configure, night_tool_errors


def stage_check(night: NightContext) -> str | None:
    """One sentence on how a second stager agrees with the stages used (None when nothing to say)."""
    staging = getattr(night.analysis, "staging", None)
    if staging is None or getattr(staging, "hypnogram", None) is None:
        return None
    check = getattr(staging, "agreement", None)
    if check and check.get("accuracy") is not None:
        return (f"Cross-check: {check['with']} staging agrees with the {staging.source} on {round(100 * check['accuracy'], 1)}% "
                f"of {check['n_epochs']} epochs (Cohen's kappa {check['kappa']}).")
    reason = (getattr(staging, "unavailable", None) or {}).get("yasa")
    if staging.source == "reference scoring":
        return (f"No automatic cross-check of the file's scoring: {reason}." if reason else
                "The automatic (YASA) cross-check of the file's scoring is not available yet (it runs after loading).")
    return None


def sleeplm_jobs_text(night: NightContext) -> str:
    """The background SleepLM jobs in words, e.g. "embeddings done, stage captions 40%" ("" when none)."""
    parts = []
    for name, value in night.sleeplm_jobs.items():
        state = value if isinstance(value, str) else ("done" if value >= 1.0 else f"{value:.0%}")
        parts.append(f"{name} {state}")
    kept = (getattr(getattr(night.analysis, "staging", None), "unavailable", None) or {}).get("sleeplm")
    if night.sleeplm_jobs.get("stage captions") == 1.0:
        parts.append(kept or "stages now from SleepLM")
    elif "stage captions" in night.sleeplm_jobs:
        parts.append("SleepLM stages replace the current ones when done")
    return ", ".join(parts)


# No args_schema: a schema without fields would make LangChain drop the injected runtime.
@tool("recording_overview")
@night_tool_errors
def recording_overview(*, runtime: ToolRuntime[NightContext]) -> dict:
    """Describe the loaded recording: length, start and end clock time, which channels are
    present or missing, whether the file has its own sleep scoring, where the sleep stages come
    from, and whether SleepLM captions/retrieval are available. Call this first when the question
    is about the recording itself or when you need to know what can be measured."""
    night = runtime.context
    rec = night.rec
    present = [ch.canonical for ch in rec.channels if ch.present]
    missing = [ch.canonical for ch in rec.channels if not ch.present]
    extras = [name for name in EXTRA_SIGNALS if name in rec.signals]
    reference = rec.reference
    n_ref_events = 0 if reference is None or reference.events is None else int(len(reference.events))
    has_ref_stages = reference is not None and reference.stages is not None
    jobs = sleeplm_jobs_text(night)
    if night.embeddings is not None:
        sleeplm = "available: captions and retrieval ready" + (f" (background: {jobs})" if jobs else "")
    elif night.model is not None:
        sleeplm = (f"weights loaded, working in the background ({jobs or 'starting'}); retrieval falls back to "
                   "measurements until the embeddings are done")
    else:
        sleeplm = f"unavailable: {night.model_status}"
    citation = night.cite(0, rec.n_epochs - 1)
    hours = round(rec.duration_s / 3600, 2)
    findings = [
        f"The recording lasts {hours} h ({format_elapsed(rec.duration_s)}, {rec.n_epochs} epochs of {EPOCH_SEC} s)"
        + (f", from {citation['clock_start']} to {citation['clock_end']}." if "clock_start" in citation else "; its start clock time is unknown."),
        f"Channels present: {', '.join(present) or 'none'}." + (f" Missing: {', '.join(missing)}." if missing else ""),
        f"Extra signals: {', '.join(extras)}." if extras else "No SpO2, heart-rate or snore channel: oxygen and snoring cannot be measured.",
        (f"The file has its own scoring ({reference.source}: {'stages' if has_ref_stages else 'no stages'}, "
         f"{n_ref_events} annotated events)."
         if reference is not None else "The file has no scoring of its own."),
        f"Sleep stages come from: {night.stage_source or 'nothing (no staging available)'}.",
        *([check] if (check := stage_check(night)) else []),
        f"SleepLM: {sleeplm}.",
    ]
    return {
        "tool": "recording_overview",
        "source": "measured",
        "findings": findings,
        "duration_h": hours,
        "n_epochs": rec.n_epochs,
        "citation": citation,
        "channels_present": present,
        "channels_missing": missing,
        "extra_signals": extras,
        "format": rec.source_format,
        "stage_source": night.stage_source,
        "stage_agreement": getattr(getattr(night.analysis, "staging", None), "agreement", None),
        "reference_scoring": {"stages": has_ref_stages, "n_events": n_ref_events} if reference is not None else None,
        "sleeplm": sleeplm,
        "sleeplm_jobs": dict(night.sleeplm_jobs),
        "warnings": list(rec.warnings),
    }


configure(recording_overview)
