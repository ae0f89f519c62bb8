"""Tool `compare_periods`: the same measurements over two parts of the night, side by side."""

from __future__ import annotations

import numpy as np
from langchain.tools import ToolRuntime, tool
from langchain_core.tools import ToolException
from pydantic import BaseModel, Field

from sleeplm.io.recording import EPOCH_SEC
from sleeplm.terms import EVENT_GROUPS, NREM_STAGES, SLEEP_STAGES, format_citation, runs_of
from tools.context import NightContext, configure, night_tool_errors, position_per_epoch, rounded
from tools.events import counted

SUPINE_CODE = 2
_STAGE_SETS = {
    "rem": ("R",), "nrem": NREM_STAGES, "non-rem": NREM_STAGES, "deep sleep": ("N3",), "n3": ("N3",),
    "n2": ("N2",), "n1": ("N1",), "light sleep": ("N1", "N2"), "wake": ("W",), "sleep": SLEEP_STAGES,
}


class CompareArgs(BaseModel):
    a: str = Field(description="first part of the night: 'first half', 'supine', 'REM', 'NREM', 'wake', or a range like '01:00 to 02:00' or 'epochs 10-100'")
    b: str = Field(description="second part, same forms, e.g. 'second half', 'non-supine', 'NREM'")


def period_mask(night: NightContext, text: str) -> np.ndarray:
    """Boolean per-epoch mask of a named part of the night (stage set, position, or time range)."""
    key = " ".join(text.lower().replace("_", " ").split()).removeprefix("the ")
    hypnogram = night.hypnogram
    if key in _STAGE_SETS:
        if hypnogram is None:
            raise ToolException(f"'{text}' needs sleep stages, and none are available for this night.")
        return np.isin(hypnogram, _STAGE_SETS[key])
    if key in ("supine", "non-supine", "nonsupine", "not supine", "lateral"):
        positions = position_per_epoch(night)
        if positions is None:
            raise ToolException("This recording has no body-position channel, so supine and non-supine cannot be compared.")
        known = positions >= 0
        return known & ((positions == SUPINE_CODE) if key == "supine" else (positions != SUPINE_CODE))
    first, last = night.span(text, None)
    mask = np.zeros(night.rec.n_epochs, dtype=bool)
    mask[first : last + 1] = True
    return mask


def period_stats(night: NightContext, mask: np.ndarray) -> dict:
    """Minutes, sleep, event rates, oxygen and heart rate over the epochs in `mask`."""
    analysis = night.require_analysis()
    minutes = rounded(mask.sum() * EPOCH_SEC / 60)
    stats: dict = {"minutes": minutes}
    hypnogram = night.hypnogram
    sleep_h = None
    if hypnogram is not None:
        sleep = mask & np.isin(hypnogram, SLEEP_STAGES)
        sleep_h = sleep.sum() * EPOCH_SEC / 3600
        stats["sleep_min"] = rounded(sleep_h * 60)
        for stage in ("W",) + SLEEP_STAGES:
            stats[f"{stage}_min"] = rounded((mask & (hypnogram == stage)).sum() * EPOCH_SEC / 60)
    events = analysis.events
    epoch_of_event = (events["start_s"] // EPOCH_SEC).astype(int).clip(0, night.rec.n_epochs - 1)
    inside = events[mask[epoch_of_event.to_numpy()]]
    for label, kinds in (("respiratory_events", EVENT_GROUPS["respiratory"]), ("desaturations", ("desaturation",)), ("arousals", ("arousal",))):
        count = int(inside["kind"].isin(kinds).sum())
        stats[label] = count
        hours = sleep_h if sleep_h else mask.sum() * EPOCH_SEC / 3600
        stats[f"{label}_per_h"] = rounded(count / hours) if hours else None
    for name, unit in (("SpO2", "%"), ("HR", "bpm")):
        signal = night.rec.signals.get(name)
        if signal is None:
            continue
        per_sample = np.repeat(mask, int(round(signal.sfreq * EPOCH_SEC)))[: len(signal.data)]
        values = signal.data[per_sample[: len(signal.data)]]
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            stats[f"{name.lower()}_mean_{unit.replace('%', 'pct')}"] = rounded(values.mean())
            stats[f"{name.lower()}_min_{unit.replace('%', 'pct')}"] = rounded(values.min())
    return stats


def _describe(night: NightContext, text: str, mask: np.ndarray) -> dict:
    runs = runs_of(mask)
    return {
        "name": text,
        "epochs": int(mask.sum()),
        "spans": [night.cite(a, b) for a, b in runs[:5]],
        "n_spans": len(runs),
    }


@tool("compare_periods", args_schema=CompareArgs)
@night_tool_errors
def compare_periods(a: str, b: str, *, runtime: ToolRuntime[NightContext]) -> dict:
    """Compare two parts of the night side by side: minutes of sleep and of each stage,
    respiratory events, desaturations and arousals (counts and per hour of sleep), oxygen and
    heart rate. Parts can be halves ('first half' vs 'second half'), positions ('supine' vs
    'non-supine'), stages ('REM' vs 'NREM') or explicit ranges ('00:00 to 02:00')."""
    night = runtime.context
    masks = {name: period_mask(night, name) for name in (a, b)}
    for name, mask in masks.items():
        if not mask.any():
            raise ToolException(f"'{name}' covers no epochs in this night, so it cannot be compared.")
    stats = {name: period_stats(night, mask) for name, mask in masks.items()}
    findings = []
    for name in (a, b):
        s, spans = stats[name], runs_of(masks[name])
        where = format_citation(night.cite(*spans[0])) + (f" and {len(spans) - 1} more span(s)" if len(spans) > 1 else "")
        patient = night.audience == "patient"
        events = (f"{s['respiratory_events']} breathing pauses or shallow breaths ({s['respiratory_events_per_h']} per hour), "
                  f"{counted('desaturation', s['desaturations'], True)}, {counted('arousal', s['arousals'], True)}") if patient else (
                  f"{s['respiratory_events']} respiratory events ({s['respiratory_events_per_h']}/h), "
                  f"{s['desaturations']} desaturations, {s['arousals']} arousals")
        findings.append(
            f"{name}: {s['minutes']} min ({where}); sleep {s.get('sleep_min')} min; {events}"
            + (f"; SpO2 mean {s['spo2_mean_pct']}%, min {s['spo2_min_pct']}%" if "spo2_mean_pct" in s else "")
            + "."
        )
    return {
        "tool": "compare_periods",
        "source": f"measured (stages from {night.stage_source})" if night.stage_source else "measured",
        "findings": findings,
        "periods": [{**_describe(night, name, masks[name]), "stats": stats[name]} for name in (a, b)],
    }


configure(compare_periods)
