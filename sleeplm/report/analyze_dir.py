"""`sleeplm-assistant analyze FILE --out DIR`: measure a night (no LLM) and write the export files.

Files written (the export contract):

- ``summary.json``: `sleeplm.measure.summary.night_summary` (snake_case keys, minutes/percent, null
  with a reason under ``not_assessable`` where a figure cannot be assessed; ``rule``: the scoring
  rule's name, title, citation and thresholds; ``ahi_by_confidence``);
- ``events.csv``: `sleeplm.report.export.write_events_csv` (kind, subtype, start_s, end_s,
  duration_s, clock_start, clock_end, elapsed_start, epoch_start, epoch_end, evidence as JSON with
  the criteria, event_id, confidence); the near-misses follow as kind ``near_miss``;
- ``hypnogram.csv``: epoch, clock, stage, source;
- ``report.md``: a short human-readable report.

Nothing identifying (file name, patient fields, recording date) is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sleeplm.measure.agreement import SCORING_NAMES
from sleeplm.measure.analysis import NightAnalysis, analyze_night
from sleeplm.io.recording import Recording
from sleeplm.report.export import agreement_lines, json_safe, write_events_csv
from sleeplm.terms import STAGES, format_elapsed
from sleeplm.measure.events import stacked
from sleeplm.measure.rules import DEFAULT_RULE
from sleeplm.measure.summary import APNEAS_ONLY, EXPORT_KEYS, TECHNICIAN_SCORED

__all__ = ["EXPLAINED_KEYS", "analyze_to_dir", "json_safe", "write_summary_json", "write_hypnogram_csv", "write_report_md"]

logger = logging.getLogger(__name__)

# summary.json beside the contract's figures: the rule the events were scored under, and the index by confidence.
EXPLAINED_KEYS = ("rule", "ahi_by_confidence")


def write_summary_json(analysis: NightAnalysis, path: Path, sleeplm_precision: dict | None = None) -> Path:
    """The contract's figures (`sleeplm.measure.summary.EXPORT_KEYS`) and ``not_assessable``, the
    scoring ``rule`` (name, title, citation, parameters) and ``ahi_by_confidence``, plus
    ``staging_note`` when the automatic stager ran on a resampled low-rate EEG (stage source and
    agreement are in hypnogram.csv and report.md), ``sleeplm_precision`` (the SleepLM encoder's
    precision and why, `sleeplm.model.precision.PrecisionChoice.to_dict`) when SleepLM was used, and, when
    the recording came with scoring, ``scoring`` (whose figures these are: "technician" or "automatic") and
    ``agreement`` (`sleeplm.measure.agreement.scoring_agreement`, null when the automatic scoring did not run).

    Examples
    --------
    >>> summary = json.loads(write_summary_json(tiny_analysis_compared(), tmp_dir / "summary.json").read_text())
    >>> list(summary)[len(EXPORT_KEYS):], summary["tib_min"], summary["severity"], summary["scoring"]
    (['rule', 'ahi_by_confidence', 'not_assessable', 'scoring', 'agreement'], 15.0, 'severe', 'technician')
    >>> sorted(summary["agreement"]), sorted(summary["agreement"]["indices"]["ahi"])
    (['events', 'indices', 'min_iou', 'not_compared', 'staging', 'technician_scoring'], ['automatic', 'technician'])
    >>> summary["rule"]["name"], summary["rule"]["parameters"]["hypopnea_desat_pct"]
    ('1A', 3.0)
    >>> summary["ahi_rule"], summary["ahi_by_confidence"]          # the technician's apneas and hypopneas: no rule, no confidence
    ('technician', None)
    >>> from sleeplm.measure.analysis import use_scoring
    >>> automatic = use_scoring(tiny_analysis_compared(), "automatic")
    >>> json.loads(write_summary_json(automatic, tmp_dir / "auto.json").read_text())["ahi_by_confidence"] == automatic.summary["ahi_by_confidence"]
    True
    """
    summary = {key: analysis.summary[key] for key in EXPORT_KEYS}
    summary.update({key: analysis.summary.get(key) for key in EXPLAINED_KEYS})
    summary["not_assessable"] = {key: reason for key, reason in analysis.summary["not_assessable"].items()
                                 if key in EXPORT_KEYS}
    if analysis.summary.get("staging_note"):
        summary["staging_note"] = analysis.summary["staging_note"]
    if sleeplm_precision is not None:
        summary["sleeplm_precision"] = sleeplm_precision
    if getattr(analysis, "scorings", None):  # the recording came with scoring (a stand-in analysis may have none)
        summary["scoring"] = analysis.scoring
        summary["agreement"] = analysis.agreement
    path.write_text(json.dumps(json_safe(summary), indent=2))
    return path


def write_hypnogram_csv(rec: Recording, analysis: NightAnalysis, path: Path) -> Path:
    """Write ``hypnogram.csv``: one row per epoch with its clock time, stage and the stages' source.

    Examples
    --------
    >>> table = pd.read_csv(write_hypnogram_csv(tiny_recording(), tiny_analysis(), tmp_dir / "hypnogram.csv"))
    >>> table.head(2)
       epoch     clock stage             source
    0      0  23:00:00     W  reference scoring
    1      1  23:00:30    N1  reference scoring
    >>> len(table)
    30
    """
    hyp = analysis.staging.hypnogram
    stages = np.full(rec.n_epochs, "?", dtype=object) if hyp is None else hyp
    pd.DataFrame({
        "epoch": np.arange(rec.n_epochs),
        "clock": [rec.epoch_clock(i) or "" for i in range(rec.n_epochs)],
        "stage": stages,
        "source": analysis.staging.source,
    }).to_csv(path, index=False)
    return path


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "not assessable"
    return f"{round(value, 2):g}{unit}" if isinstance(value, (int, float)) else str(value)


def _ahi_rule_text(s: dict) -> str:
    """Under which rule (or by whom) the report's AHI was scored."""
    if s["ahi_rule"] == APNEAS_ONLY:
        return "apneas only: hypopneas cannot be scored"
    if s["ahi_rule"] == TECHNICIAN_SCORED:
        return f"scored by the technician; the product's own events follow hypopnea rule {s['rule']['name']}"
    return f"hypopnea rule {s['ahi_rule']}, {s['rule']['title']}"


def write_report_md(rec: Recording, analysis: NightAnalysis, path: Path) -> Path:
    """Write ``report.md``: a short human-readable report of the measured night (no LLM).

    Examples
    --------
    >>> text = write_report_md(tiny_recording(), tiny_analysis(), tmp_dir / "report.md").read_text()
    >>> print("\\n".join(text.splitlines()[:4]))
    # Night report (measured, no LLM)
    <BLANKLINE>
    Recording: EDF+, 30 epochs of 30 s (0h15m00s), start 23:00:00.
    Sleep stages from: reference scoring.
    """
    s = analysis.summary
    start = rec.clock_at(0) or "unknown"
    staged = analysis.staging.hypnogram is not None
    per_hour_of = "" if staged else " (per hour of recording: no sleep time)"
    lines = [
        "# Night report (measured, no LLM)",
        "",
        f"Recording: {rec.source_format}, {rec.n_epochs} epochs of 30 s ({format_elapsed(rec.duration_s)}), start {start}.",
        f"Sleep stages from: {analysis.staging.source}."
        + (f" Agreement with {analysis.staging.agreement['with']}: accuracy {analysis.staging.agreement['accuracy']}, "
           f"kappa {analysis.staging.agreement['kappa']}." if analysis.staging.agreement else ""),
        *([f"Scoring used: {SCORING_NAMES[analysis.scoring]}."] if analysis.scorings else []),
        "",
        "## Sleep",
        f"- Time in bed {_fmt(s['tib_min'], ' min')}, total sleep {_fmt(s['tst_min'], ' min')}, "
        f"efficiency {_fmt(s['se_pct'], '%')}",
        f"- Sleep onset latency {_fmt(s['sol_min'], ' min')}, REM latency {_fmt(s['rem_latency_min'], ' min')}, "
        f"WASO {_fmt(s['waso_min'], ' min')}, awakenings {_fmt(s['n_awakenings'])} "
        "(SOL to the first sleep epoch, AASM; awakenings: wake runs of >= 1 epoch within the sleep period)",
        "- Stages: " + ", ".join(f"{st} {_fmt(s[f'{st}_min'], ' min')}" for st in STAGES),
        "",
        "## Breathing and oxygen",
        f"- AHI {_fmt(s['ahi'], '/h')} ({_ahi_rule_text(s)}), "
        f"REI over recording time {_fmt(s['rei'], '/h')}, "
        f"AASM severity band: {_fmt(s['severity'])}{' from the ' + s['severity_basis'].upper() if s.get('severity_basis') else ''} "
        "(screening information, not a diagnosis)",
        f"- Apneas {_fmt(s['n_apneas'])}, hypopneas {_fmt(s['n_hypopneas'])}; supine AHI {_fmt(s['ahi_supine'], '/h')}, "
        f"non-supine {_fmt(s['ahi_nonsupine'], '/h')}; REM {_fmt(s['ahi_rem'], '/h')}, NREM {_fmt(s['ahi_nrem'], '/h')}",
        f"- ODI 3% {_fmt(s['odi3'], '/h')}, ODI 4% {_fmt(s['odi4'], '/h')}{per_hour_of}, T90 {_fmt(s['t90_min'], ' min')}, "
        f"SpO2 mean {_fmt(s['spo2_mean'], '%')}, min {_fmt(s['spo2_min'], '%')}",
        f"- Mean heart rate {'in sleep' if staged else 'over the recording'} {_fmt(s['hr_mean'], ' bpm')}",
    ]
    if s.get("ahi_by_confidence"):
        lines.append("- Respiratory events by confidence (see sleeplm.measure.rules): " + "; ".join(
            f"{cut}: {v['events']} events, index {_fmt(v['ahi'], '/h')}" for cut, v in s["ahi_by_confidence"].items()))
    if s.get("position_min"):
        lines.append("- Time per position: " + ", ".join(f"{k} {v:g} min" for k, v in s["position_min"].items()))
    if s["not_assessable"]:
        lines += ["", "## Not assessable"] + [f"- {k}: {v}" for k, v in s["not_assessable"].items()]
    counts = analysis.events["kind"].value_counts() if len(analysis.events) else pd.Series(dtype=int)
    lines += ["", "## Events", *(f"- {kind}: {n}" for kind, n in counts.items())] if len(counts) else ["", "No events scored."]
    if analysis.agreement is not None:
        lines += ["", "## Technician vs automatic scoring", "", *agreement_lines(analysis.agreement)]
    path.write_text("\n".join(lines) + "\n")
    return path


def analyze_to_dir(path, out_dir, analysis: NightAnalysis | None = None, model=None,
                   rule: str = DEFAULT_RULE, channel_map: dict | None = None,
                   position_map: str | dict | None = None, annotations=None, scoring: str = "technician") -> list[Path]:
    """Load `path`, analyse it and write summary.json, events.csv, hypnogram.csv and report.md.

    Parameters
    ----------
    path : EDF/EDF+/BDF recording (or SleepLM tensor) to analyse.
    out_dir : output directory (created if missing).
    analysis : an existing `NightAnalysis` of the same file, to skip recomputing it.
    model : a loaded SleepLM: stages a night without its own scoring from SleepLM's stage
        captions (YASA's agreement with them is reported; its precision is written to summary.json);
        None stages with YASA.
    rule : the scoring rule (`sleeplm.measure.rules.RULES`): "1A" (>= 3 % desaturation or an arousal, AASM
        recommended), "1B" (>= 4 %), "chicago-1999", "shhs"...
    channel_map, position_map : handed to `sleeplm.io.reader.load_recording` (files whose channels
        or position codes are not recognised).
    annotations : the technician's scoring file, handed to `load_recording` (default: one named
        like the recording beside it, see `sleeplm.io.scoring.find_scoring_file`).
    scoring : when the recording came with scoring, whose figures the files give: "technician"
        (default) or "automatic"; the two are compared in summary.json and report.md either way.

    Returns
    -------
    The four paths written, in the order above.

    Examples
    --------
    >>> written = analyze_to_dir(tiny_night_path(), tmp_dir / "out", analysis=tiny_analysis())
    >>> [p.name for p in written]
    ['summary.json', 'events.csv', 'hypnogram.csv', 'report.md']
    >>> any("tiny_night" in p.read_text() for p in written)      # the file name is not written anywhere
    False
    """
    from sleeplm.io.reader import load_recording

    rec = load_recording(path, channel_map=channel_map, position_map=position_map, annotations=annotations)
    analysis = (analyze_night(rec, model=model, hypopnea_rule=rule, scoring=scoring) if analysis is None
                else analysis)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        write_summary_json(analysis, out / "summary.json",
                           model.precision.to_dict() if getattr(model, "precision", None) is not None else None),
        write_events_csv(rec, stacked(analysis.events, analysis.near_misses), out / "events.csv"),
        write_hypnogram_csv(rec, analysis, out / "hypnogram.csv"),
        write_report_md(rec, analysis, out / "report.md"),
    ]
    logger.info("analysis written to %d files", len(written))
    return written
