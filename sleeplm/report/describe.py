"""Measured captions: short deterministic text in the style of SleepLM's captions, built from the
per-epoch features and events of an epoch range, so the agent can set it beside SleepLM's own.

Examples
--------
>>> from sleeplm.report.describe import describe_epochs
>>> describe_epochs(tiny_recording(), "cardiac", 12, 13, analysis=tiny_analysis())["text"]
'Heart rate ...-... bpm (mean ...), ...; RMSSD ... ms; SpO2 mean ...%, lowest ...%.'
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sleeplm.io.recording import Recording
from sleeplm.errors import MeasurementError
from sleeplm.terms import CAPTION_DOMAINS, STAGE_NAMES

__all__ = ["describe_epochs"]


def _mean(features: pd.DataFrame, column: str) -> float | None:
    values = features[column].to_numpy(dtype=float) if column in features else np.array([])
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _level(value: float, night: float | None, low: float = 0.7, high: float = 1.5) -> str:
    """'low'/'moderate'/'high' of a value relative to the night's median."""
    if not night:
        return "moderate"
    ratio = value / night
    return "low" if ratio < low else "high" if ratio > high else "moderate"


def _event_phrase(events: pd.DataFrame, kinds: tuple[str, ...]) -> str | None:
    chosen = events[events["kind"].isin(kinds)]
    if chosen.empty:
        return None
    parts = []
    for (kind, subtype), group in chosen.groupby(["kind", "subtype"], sort=False):
        name = f"{subtype} {kind}" if subtype and kind in ("apnea", "hypopnea") else kind.replace("_", " ")
        parts.append(f"{len(group)} {name}{'s' if len(group) > 1 else ''}")
    return ", ".join(parts)


def _stage_phrase(stages: np.ndarray | None, source: str | None) -> str:
    if stages is None:
        return "Sleep stage unknown (no staging available)"
    counts = pd.Series(stages).value_counts()
    main = STAGE_NAMES[counts.index[0]]
    if len(counts) == 1:
        return f"{main} ({source})"
    mix = ", ".join(f"{stage} {100 * n / len(stages):.0f}%" for stage, n in counts.items())
    return f"Mostly {main.lower() if main != 'REM sleep' else main} ({mix}; {source})"


def _brain(f: pd.DataFrame, night: pd.DataFrame, stages, source) -> list[str]:
    out = [_stage_phrase(stages, source)]
    delta, alpha, beta = (_mean(f, f"brain_c3_{b}_rel") or _mean(f, f"brain_c4_{b}_rel") for b in ("delta", "alpha", "beta"))
    if delta is None:
        out.append("EEG not measured (missing or flat)")
    else:
        graphoelements = [name for name, column in (("sleep spindles", "brain_spindle_count"),
                                                    ("K-complexes", "brain_kcomplex_count"))
                          if (_mean(f, column) or 0) >= 0.5]  # about one per epoch or more
        if graphoelements:
            out[0] += " with " + " and ".join(graphoelements)
        out.append(f"delta {delta:.0%} of EEG power{' (slow waves dominant)' if delta > 0.5 else ''}; "
                   f"alpha {'low' if alpha < 0.1 else 'high' if alpha > 0.2 else 'moderate'} ({alpha:.0%}), beta {beta:.0%}")
    rapid, slow = _mean(f, "brain_eog_rapid_ratio"), _mean(f, "brain_eog_slow_power_uv2")
    if rapid is None:
        out.append("EOG not measured (missing or flat)")
    elif rapid > 0.6:
        out.append("rapid eye movements")
    elif slow is not None and slow > 2 * np.nanmedian(night["brain_eog_slow_power_uv2"]):
        out.append("slow rolling eye movements")
    else:
        out.append("few eye movements")
    return out


def _cardiac(f: pd.DataFrame, night: pd.DataFrame, events: pd.DataFrame) -> list[str]:
    out = []
    lo, hi, mean = _mean(f, "cardiac_hr_min_bpm"), _mean(f, "cardiac_hr_max_bpm"), _mean(f, "cardiac_hr_mean_bpm")
    if mean is None:
        out.append("Heart rate not measured (no ECG or HR channel, or no detectable beats)")
    else:
        lo, hi = np.nanmin(f["cardiac_hr_min_bpm"]), np.nanmax(f["cardiac_hr_max_bpm"])
        slope = _mean(f, "cardiac_hr_slope_bpm_per_min")
        trend = "steady" if slope is None or abs(slope) < 2 else "rising" if slope > 0 else "falling"
        rmssd = _mean(f, "cardiac_rmssd_ms")
        rhythm = "" if rmssd is None else f"; RMSSD {rmssd:.0f} ms{' (irregular)' if rmssd > 150 else ''}"
        out.append(f"Heart rate {lo:.0f}-{hi:.0f} bpm (mean {mean:.0f}), {trend}{rhythm}")
    spo2_mean = _mean(f, "cardiac_spo2_mean_pct")
    if spo2_mean is not None:
        out.append(f"SpO2 mean {spo2_mean:.0f}%, lowest {np.nanmin(f['cardiac_spo2_min_pct']):.0f}%")
    phrase = _event_phrase(events, ("tachycardia", "bradycardia", "desaturation"))
    if phrase:
        out.append(phrase)
    return out


def _respiratory(f: pd.DataFrame, night: pd.DataFrame, events: pd.DataFrame) -> list[str]:
    out = []
    rate = _mean(f, "resp_thx_rate_per_min") or _mean(f, "resp_abd_rate_per_min")
    if rate is None:
        out.append("Breathing effort not measured (missing or flat)")
    else:
        cv = _mean(f, "resp_breath_interval_cv")
        out.append(f"Breathing {rate:.0f}/min, {'regular' if cv is not None and cv < 0.2 else 'irregular'}")
    amplitude = _mean(f, "resp_flow_amplitude_ratio")
    if amplitude is None:
        out.append("airflow not measured (missing or flat)")
    else:
        out.append(f"airflow at {amplitude:.0%} of its baseline")
        if (_mean(f, "resp_flow_flattening") or 0) > 0.6:
            out.append("flattened inspiratory flow")
    phase = _mean(f, "resp_thx_abd_phase_deg")
    if phase is not None and phase > 90:
        out.append(f"paradoxical thoraco-abdominal effort ({phase:.0f} degrees)")
    phrase = _event_phrase(events, ("apnea", "hypopnea", "desaturation"))
    if amplitude is None:  # without airflow, apneas and hypopneas cannot be scored: silence is not "none"
        out.append((phrase + "; " if phrase else "") + "apneas and hypopneas not assessable without airflow")
    else:
        out.append(phrase if phrase else "no respiratory events")
    return out


def _position_muscle(f: pd.DataFrame, night: pd.DataFrame, events: pd.DataFrame) -> list[str]:
    out = []
    if "posmus_position" in f and f["posmus_position"].notna().any():
        counts = f["posmus_position"].value_counts()
        out.append(counts.index[0] if len(counts) == 1 else ", ".join(f"{p} {n} epochs" for p, n in counts.items()))
    else:
        out.append("Body position not recorded")
    rms = _mean(f, "posmus_emg_rms_uv")
    if rms is None:
        out.append("chin EMG not measured (missing or flat)")
    else:
        bursts = int(np.nansum(f["posmus_emg_burst_count"]))
        level = _level(rms, float(np.nanmedian(night["posmus_emg_rms_uv"])))
        out.append(f"chin EMG tone {level} ({rms:.1f} uV RMS), {bursts} burst{'s' if bursts != 1 else ''}")
    phrase = _event_phrase(events, ("position_change",))
    if phrase:
        out.append(phrase)
    return out


def _stage_event(stages, source, events: pd.DataFrame) -> list[str]:
    phrase = _event_phrase(events, ("apnea", "hypopnea", "desaturation", "arousal", "tachycardia", "bradycardia"))
    return [_stage_phrase(stages, source), phrase if phrase else "no scored events"]


def describe_epochs(rec: Recording, domain: str, start: int, end: int, analysis=None) -> dict:
    """Describe epochs ``start..end`` (inclusive) in one domain from the measurements.

    Parameters
    ----------
    rec : the night.
    domain : "brain", "cardiac", "respiratory", "position_muscle" or "stage_event".
    start, end : inclusive epoch indices.
    analysis : `sleeplm.measure.analysis.NightAnalysis` of this night (computed when None; slow).

    Returns
    -------
    dict with ``text`` (a few short sentences), ``source`` ("measured"), ``domain``,
    ``citation`` (`Recording.cite_epochs`) and ``stage_source``.

    Examples
    --------
    >>> rec, analysis = tiny_recording(), tiny_analysis()
    >>> out = describe_epochs(rec, "respiratory", 8, 9, analysis=analysis)
    >>> out["source"], out["domain"], out["stage_source"], out["citation"]["clock_start"]
    ('measured', 'respiratory', 'reference scoring', '23:04:00')
    >>> out["text"]                     # epochs 8-9 hold a central apnea in this simulated night
    'Breathing .../min, ...; airflow at ...% of its baseline; ...central apnea...'
    >>> describe_epochs(rec, "dreams", 8, 9, analysis=analysis)
    Traceback (most recent call last):
    ...
    sleeplm.errors.MeasurementError: unknown domain 'dreams'; use one of brain, cardiac, respiratory, position_muscle, stage_event.
    """
    if domain not in CAPTION_DOMAINS:
        raise MeasurementError(f"unknown domain {domain!r}; use one of {', '.join(CAPTION_DOMAINS)}.")
    start, end = int(start), int(end)
    if not 0 <= start <= end < rec.n_epochs:
        raise MeasurementError(
            f"epochs {start}-{end} are outside this night (epochs 0-{rec.n_epochs - 1}); pick a range inside it."
        )
    if analysis is None:
        from sleeplm.measure.analysis import analyze_night

        analysis = analyze_night(rec)
    features = analysis.features.iloc[start : end + 1]
    events = analysis.events
    if len(events):
        events = events[(events["end_s"] > start * 30) & (events["start_s"] < (end + 1) * 30)]
    hyp = analysis.staging.hypnogram
    stages = None if hyp is None else np.asarray(hyp, dtype=object)[start : end + 1]
    source = analysis.staging.source
    parts = {
        "brain": lambda: _brain(features, analysis.features, stages, source),
        "cardiac": lambda: _cardiac(features, analysis.features, events),
        "respiratory": lambda: _respiratory(features, analysis.features, events),
        "position_muscle": lambda: _position_muscle(features, analysis.features, events),
        "stage_event": lambda: _stage_event(stages, source, events),
    }[domain]()
    text = parts[0] + ("; " + "; ".join(parts[1:]) if len(parts) > 1 else "") + "."
    return {"text": text[0].upper() + text[1:], "source": "measured", "domain": domain,
            "citation": rec.cite_epochs(start, end), "stage_source": source}
