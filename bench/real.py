"""Accuracy on real expert-scored PSG, side by side with YASA.

Each recording listed in `RECORDINGS` (sources, commits and licences: bench/data/PROVENANCE.md) is
loaded like an upload, with NO channel map: the product must recognise the file's own labels.
The experts' sleep stages are handed to the loader as a scoring file in the experts' own epoch
length (DREAMS: 5-s R&K epochs), so the product's epoch mapping is exercised too. Printed per
recording and pooled:

- channels mapped (canonical <- file label);
- staging: Cohen's kappa against the experts of the product's automatic staging (YASA through
  `sleeplm.measure.staging.stage_with_yasa`, resampled when the EEG is slow) next to
  ``yasa.SleepStaging`` run directly on the same EEG/EOG/EMG (resampled with mne to 100 Hz when
  the file rate is at or below YASA's 80-Hz minimum, as YASA refuses it);
- respiratory events (apneas + hypopneas) against the experts', matched one-to-one at IoU >= 0.2
  (`evaluation.event_agreement`), scored in the experts' sleep epochs;
- AHI (events per hour of the experts' sleep time) against the experts' AHI, and end to end
  (events in the product's own stages, per hour of its own sleep time);
- EEG arousals against the experts' arousals, when they scored them;
- per scoring rule (`sleeplm.measure.rules.RULES`, re-scored from the cached candidates): AHI vs the
  experts', event precision/recall, and the share of expert events found among the accepted +
  near-miss candidates (what the rule's thresholds, not the detector, cost in recall).

The recordings are not in git (see PROVENANCE.md); they are read from ``--data-dir`` (default:
``$SLEEPLM_REAL_PSG``, else ``../shared/real_psg`` beside the repository). A recording whose files are absent is
listed as absent; one the product cannot load says why.

``bench/real.py PATH [PATH ...]`` runs any public scored night instead, with no conversion step: the
recording is loaded as the product loads an upload, its scoring found beside it the way the loader
finds it (EDF+ annotations, Sleep-EDF ``*-Hypnogram.edf``, and the scoring files the loader knows by
name; a DREAMS ``Hypnogram_<name>.txt`` beside ``<name>.edf`` is read here), the night is analysed
(`sleeplm.measure.analysis.analyze_night`: the technician's scoring and the product's own) and the
agreement table of the report (`sleeplm.report.export.agreement_lines`) is printed: staging kappa
and confusion matrix, event precision/recall per type at IoU >= 0.2, AHI and ODI both ways.

``--write-features PATH`` also saves the derived features the offline test
(tests/test_real_psg.py) asserts the respiratory figures on: the breathing channels as the product
reads them, low-passed to 0.5 Hz and decimated to 4 Hz (float16), the arousals the product
detects on the full-rate EEG, and the experts' 30-s stages and respiratory events.

Run: ``nice .venv/bin/python bench/real.py [--data-dir DIR]`` or ``nice .venv/bin/python bench/real.py PATH [PATH ...]``
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

from evaluation import event_agreement

RESPIRATORY = ("apnea", "hypopnea")
SLEEP = ("N1", "N2", "N3", "R")
DEFAULT_DATA_DIR = Path(os.environ.get("SLEEPLM_REAL_PSG", Path(__file__).resolve().parents[2] / "shared" / "real_psg"))
# DREAMS hypnogram codes (one value per 5 s, R&K) -> the R&K labels a scoring file would carry.
DREAMS_STAGE_LABELS = {5: "Sleep stage W", 4: "Sleep stage R", 3: "Sleep stage 1", 2: "Sleep stage 2",
                       1: "Sleep stage 3", 0: "Sleep stage 4", -1: "Movement time"}
DREAMS_STAGE_S = 5.0
BREATHING = ("AF", "Pressure", "THX", "ABD")
FEATURE_SFREQ = 4.0


@dataclass
class Reference:
    """The experts' scoring of one recording."""

    stage_file: Path  # a scoring file the loader reads (onset, duration, description)
    events: pd.DataFrame  # respiratory events: start_s, end_s, code
    arousals: pd.DataFrame | None  # start_s, end_s, or None when not scored


def _coded_runs(codes: np.ndarray, sfreq: float) -> pd.DataFrame:
    """Runs of a non-zero event-code channel as ``start_s, end_s, code``."""
    codes = np.round(np.asarray(codes)).astype(int)
    edges = np.flatnonzero(np.diff(np.r_[0, codes, 0]))
    rows = [(a / sfreq, b / sfreq, int(codes[a])) for a, b in zip(edges[:-1], edges[1:]) if codes[a] != 0]
    return pd.DataFrame(rows, columns=["start_s", "end_s", "code"])


def dreams_stage_file(edf_path: Path, hypnogram_path: Path, workdir: Path) -> Path:
    """The DREAMS 5-s R&K hypnogram text file as a scoring file the loader reads (onset, duration, description)."""
    codes = np.loadtxt(hypnogram_path, skiprows=1).astype(int)
    table = pd.DataFrame({"onset": np.arange(codes.size) * DREAMS_STAGE_S, "duration": DREAMS_STAGE_S,
                          "description": [DREAMS_STAGE_LABELS.get(c, "Sleep stage ?") for c in codes]})
    stage_file = workdir / f"{edf_path.stem}_stages.csv"
    table.to_csv(stage_file, index=False)
    return stage_file


def dreams_reference(edf_path: Path, hypnogram_path: Path, workdir: Path) -> Reference:
    """DREAMS (Brainnet) excerpt: 5-s R&K hypnogram text file; respiratory events and arousals in the
    EDF's ``event_pneumo`` and ``event_neuro`` channels (1 Hz, non-zero = event). Which code is which
    event kind is not documented publicly (bench/data/PROVENANCE.md), so the codes are kept as found and
    every respiratory code counts as an apnea or hypopnea, never guessed into one kind."""
    import edfio

    stage_file = dreams_stage_file(edf_path, hypnogram_path, workdir)
    signals = {s.label: s for s in edfio.read_edf(edf_path).signals}
    pneumo, neuro = signals["event_pneumo"], signals.get("event_neuro")
    return Reference(
        stage_file=stage_file,
        events=_coded_runs(pneumo.data, pneumo.sampling_frequency),
        arousals=None if neuro is None else _coded_runs(neuro.data, neuro.sampling_frequency),
    )


# name -> (EDF path, scoring files, reader) relative to the data folder.
RECORDINGS: dict[str, tuple[str, tuple[str, ...], Callable[..., Reference]]] = {
    "dreams-spindles-excerpt3": ("dreams_spindles/excerpt3.edf", ("dreams_spindles/Hypnogram_excerpt3.txt",),
                                 dreams_reference),
}


def _kappa(ours: np.ndarray, experts: np.ndarray) -> float | None:
    from sleeplm.measure.staging import agreement

    return agreement(ours, experts, "experts")["kappa"]


def _yasa_direct(path: Path, rec) -> np.ndarray:
    """``yasa.SleepStaging`` on the file's own EEG, EOG and EMG (the labels the product mapped)."""
    import mne
    import yasa

    labels = {}
    for info in rec.channels:
        if info.present and not info.derived and info.source:
            labels[info.canonical] = info.source
    eeg = labels.get("EEG_C4_A1") or labels.get("EEG_C3_A2")
    eog, emg = labels.get("EOG_Left"), labels.get("EMG_Chin")
    picks = [label for label in (eeg, eog, emg) if label]
    raw = mne.io.read_raw_edf(path, include=picks, preload=True, verbose="error")
    # mne scales "uV" but not an upper-case "UV" (DREAMS): such channels come back in uV, not V.
    unscaled = [ch for ch, data in zip(raw.ch_names, raw.get_data()) if np.median(np.abs(data)) > 1e-3]
    if unscaled:
        raw.apply_function(lambda x: x * 1e-6, picks=unscaled)
    if raw.info["sfreq"] <= 80:
        raw.resample(100, verbose="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = yasa.SleepStaging(raw, eeg_name=eeg, eog_name=eog, emg_name=emg).predict()
    values = predicted.hypno.values if hasattr(predicted, "hypno") else predicted  # a yasa.Hypnogram since 0.7
    stages = np.array([{"WAKE": "W", "REM": "R"}.get(str(s), str(s)) for s in values], dtype=object)
    return np.pad(stages, (0, max(rec.n_epochs - stages.size, 0)), constant_values="?")[: rec.n_epochs]


def _in_stages(events: pd.DataFrame, stages: np.ndarray) -> pd.DataFrame:
    """Events that begin in a sleep epoch of `stages`."""
    first = (events["start_s"].to_numpy(dtype=float) // 30).astype(int).clip(0, len(stages) - 1)
    return events[np.isin(stages[first], SLEEP)] if len(events) else events


def _per_hour(count: int, stages: np.ndarray) -> float | None:
    hours = np.isin(stages, SLEEP).sum() * 30 / 3600
    return round(float(count / hours), 1) if hours else None


def evaluate(name: str, data_dir: Path, workdir: Path) -> dict:
    """Run the product on one recording and compare it with its experts."""
    from sleeplm.errors import RecordingError
    from sleeplm.io.reader import load_recording
    from sleeplm.measure.events import detect_events, rescore_events, score_events, stacked
    from sleeplm.measure.rules import RULES
    from sleeplm.measure.staging import stage_with_yasa

    edf, scoring, reader = RECORDINGS[name]
    paths = [data_dir / edf, *(data_dir / s for s in scoring)]
    if not all(p.is_file() for p in paths):
        return {"recording": name, "status": f"absent from {data_dir}"}
    reference = reader(paths[0], *paths[1:], workdir=workdir)
    try:
        rec = load_recording(paths[0], annotations=reference.stage_file)  # NO channel map
    except RecordingError as exc:
        return {"recording": name, "status": f"not loaded: {exc}"}
    experts = np.asarray(rec.reference.stages, dtype=object)
    row: dict = {"recording": name, "status": "ok",
                 "mapped": ", ".join(f"{i.canonical}<-{i.source}" for i in rec.channels + rec.extra_channels
                                     if i.present and i.source),
                 "_experts": experts}
    for key, stager in (("kappa_product", stage_with_yasa), ("kappa_yasa_direct", lambda r: _yasa_direct(paths[0], r))):
        try:
            stages = stager(rec)
            row[key], row[f"_{key}"] = _kappa(stages, experts), stages
        except (ValueError, AssertionError, KeyError) as exc:
            row[key] = f"n/a ({exc})"
    truth = _in_stages(reference.events, experts)
    scoring = score_events(rec, hypnogram=experts)
    events = scoring.events
    ours = events[events["kind"].isin(RESPIRATORY)]
    row["rules"] = {}
    for rule in RULES:
        rescored = rescore_events(rec, scoring, rule)
        accepted = rescored.events[rescored.events["kind"].isin(RESPIRATORY)]
        scored, considered = event_agreement(accepted, truth), event_agreement(stacked(accepted, rescored.near_misses), truth)
        row["rules"][rule] = {"ahi": _per_hour(len(accepted), experts), "precision": scored["precision"],
                              "recall": scored["recall"], "candidate_recall": considered["recall"]}
    row.update({f"resp_{k}": v for k, v in event_agreement(ours, truth).items()})
    row["ahi"], row["ahi_experts"] = _per_hour(len(ours), experts), _per_hour(len(truth), experts)
    if "_kappa_product" in row:
        own = row["_kappa_product"]
        e2e = detect_events(rec, hypnogram=own)
        row["ahi_end_to_end"] = _per_hour(int(e2e["kind"].isin(RESPIRATORY).sum()), own)
    if reference.arousals is not None:
        arousal = event_agreement(events[events["kind"] == "arousal"], _in_stages(reference.arousals, experts))
        row["arousal_precision"], row["arousal_recall"] = arousal["precision"], arousal["recall"]
    row["_rec"], row["_truth"], row["_events"] = rec, truth, events
    return row


def evaluate_path(path: Path, workdir: Path) -> dict:
    """Analyse one scored night found at `path` (its scoring beside it) and return its agreement table."""
    from sleeplm.errors import RecordingError
    from sleeplm.io.reader import load_recording
    from sleeplm.measure.agreement import has_technician_scoring
    from sleeplm.measure.analysis import analyze_night

    dreams = path.with_name(f"Hypnogram_{path.stem}.txt")
    try:
        annotations = dreams_stage_file(path, dreams, workdir) if dreams.is_file() else None
        rec = load_recording(path, annotations=annotations)
    except RecordingError as exc:
        return {"recording": path.name, "status": f"not loaded: {exc}"}
    if not has_technician_scoring(rec):
        return {"recording": path.name, "status": "no scoring found with the recording or beside it"}
    analysis = analyze_night(rec)
    return {"recording": path.name, "status": "ok", "agreement": analysis.agreement}


def write_features(row: dict, path: Path) -> Path:
    """Save the derived features the offline test asserts the respiratory figures on (see the module doc)."""
    from scipy.signal import resample_poly

    rec = row["_rec"]
    arrays = {}
    for name in BREATHING:
        sig = rec.signals.get(name)
        if sig is not None:
            low = resample_poly(np.asarray(sig.data, dtype=float), int(FEATURE_SFREQ), int(round(sig.sfreq)),
                                window=("kaiser", 8.0))
            arrays[name] = low.astype(np.float16)
    events = row["_events"]
    arousals = events[events["kind"] == "arousal"][["start_s", "end_s"]].to_numpy(dtype=float)
    np.savez_compressed(path, sfreq=FEATURE_SFREQ, stages=row["_experts"].astype(str), arousals=arousals,
                        expert_events=row["_truth"][["start_s", "end_s", "code"]].to_numpy(dtype=float), **arrays)
    return path


def pooled(rows: list[dict]) -> dict:
    """Pooled figures over the evaluated recordings."""
    done = [r for r in rows if r["status"] == "ok"]
    if not done:
        return {"recordings": 0}
    out: dict = {"recordings": len(done)}
    experts = np.concatenate([r["_experts"] for r in done])
    for key in ("kappa_product", "kappa_yasa_direct"):
        if all(f"_{key}" in r for r in done):
            out[key] = _kappa(np.concatenate([r[f"_{key}"] for r in done]), experts)
    tp, fp, fn = (sum(r[f"resp_{k}"] for r in done) for k in ("tp", "fp", "fn"))
    out["resp_precision"] = round(tp / (tp + fp), 3) if tp + fp else None
    out["resp_recall"] = round(tp / (tp + fn), 3) if tp + fn else None
    out["resp_tp_fp_fn"] = (tp, fp, fn)
    out["ahi"] = _per_hour(sum(r["resp_tp"] + r["resp_fp"] for r in done), experts)
    out["ahi_experts"] = _per_hour(sum(r["resp_tp"] + r["resp_fn"] for r in done), experts)
    return out


def main() -> None:
    from sleeplm.report.export import agreement_lines

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="scored nights to run (the recording; its scoring is found beside it); "
                             "default: the recordings listed in RECORDINGS under --data-dir")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--write-features", type=Path, help="save the offline test's derived features here (.npz)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.paths:
        with tempfile.TemporaryDirectory() as tmp:
            for path in args.paths:
                row = evaluate_path(path, Path(tmp))
                print(f"\n== {row['recording']}: {row['status']}")
                if row["status"] == "ok":
                    print("\n".join(agreement_lines(row["agreement"])))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in RECORDINGS:
            rows.append(evaluate(name, args.data_dir, Path(tmp)))
    for row in rows:
        print(f"\n== {row['recording']}: {row['status']}")
        if row["status"] != "ok":
            continue
        print(f"channels mapped: {row['mapped']}")
        print(f"staging kappa vs experts: product (YASA via sleeplm) {row['kappa_product']}, "
              f"yasa.SleepStaging direct {row['kappa_yasa_direct']}")
        print(f"respiratory events at IoU >= 0.2: precision {row['resp_precision']}, recall {row['resp_recall']} "
              f"(tp {row['resp_tp']}, fp {row['resp_fp']}, fn {row['resp_fn']})")
        print(f"AHI: {row['ahi']}/h vs experts {row['ahi_experts']}/h (in the experts' sleep); "
              f"end to end with the product's own stages {row.get('ahi_end_to_end')}/h")
        if "arousal_recall" in row:
            print(f"arousals vs experts: precision {row['arousal_precision']}, recall {row['arousal_recall']}")
        print(f"per scoring rule (experts' AHI {row['ahi_experts']}/h; expert events found among accepted + near-miss "
              "candidates = what the thresholds cost):")
        for rule, r in row["rules"].items():
            print(f"  {rule:22s} AHI {r['ahi']}/h, precision {r['precision']}, recall {r['recall']}, "
                  f"found among candidates {r['candidate_recall']}")
        if args.write_features:
            print(f"derived features written to {write_features(row, args.write_features)}")
    print("\n== pooled:", pooled(rows))


if __name__ == "__main__":
    main()
