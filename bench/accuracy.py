"""Accuracy of the measurements on simulated nights with known truth.

For each night (seeds x montages x severities, artefacts and noise on), the night is written
as EDF+, loaded like an upload and analysed; events are matched to the truth one-to-one at
IoU >= 0.2. Printed per night and pooled: respiratory event F1 (apneas + hypopneas), apnea
subtype accuracy, desaturation, arousal (and its recall), tachycardia and position-change F1, AHI error (events scored in the true sleep
epochs, and end to end with YASA's stages), YASA staging kappa against the true hypnogram.

Targets (issue 5): respiratory F1 >= 0.9, desaturation F1 >= 0.9, |AHI error| <= 2/h.

Run: ``nice .venv/bin/python bench/accuracy.py [--hours 2] [--seeds 0 1 2] [--montages aasm shhs nox]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

from sleeplm.terms import EVENT_GROUPS, SLEEP_STAGES

RESPIRATORY = EVENT_GROUPS["respiratory"]


def _widened(events: pd.DataFrame, margin_s: float = 7.5) -> pd.DataFrame:
    return events.assign(start_s=events.start_s - margin_s, end_s=events.start_s + margin_s)


def evaluate_night(hours: float, seed: int, severity: str, montage: str, with_yasa: bool = True) -> dict:
    """Simulate, write, load and score one night; return the accuracy figures."""
    from evaluation import event_agreement, match_events
    from sleeplm.measure.events import detect_events
    from sleeplm.io.reader import load_recording
    from sleeplm.measure.signals import get_signal, position_codes
    from sleeplm.measure.staging import agreement, stage_with_yasa
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    with tempfile.TemporaryDirectory() as tmp:
        path = write_night(simulate_night(hours, seed=seed, severity=severity, montage=montage, sfreq=128),
                           Path(tmp) / "night.edf")
        rec, truth = load_recording(path), load_truth(path)
    true_events = truth.events
    events = detect_events(rec, hypnogram=truth.hypnogram)
    ours_resp, true_resp = events[events.kind.isin(RESPIRATORY)], true_events[true_events.kind.isin(RESPIRATORY)]
    pairs = match_events(ours_resp, true_resp)
    same_kind = [ours_resp.iloc[i].kind == true_resp.iloc[j].kind for i, j, _ in pairs]
    apnea_pairs = [(i, j) for i, j, _ in pairs if ours_resp.iloc[i].kind == "apnea" == true_resp.iloc[j].kind]
    subtype_ok = [ours_resp.iloc[i].subtype == true_resp.iloc[j].subtype for i, j in apnea_pairs]
    tst_h = np.isin(truth.hypnogram, SLEEP_STAGES).sum() * 30 / 3600
    row = {
        "montage": montage, "severity": severity, "seed": seed,
        "resp_f1": event_agreement(ours_resp, true_resp)["f1"],
        "kind_acc": round(float(np.mean(same_kind)), 3) if same_kind else None,
        "apnea_subtype_acc": round(float(np.mean(subtype_ok)), 3) if subtype_ok else None,
        **{f"{short}_f1": event_agreement(events[events.kind == kind], true_events[true_events.kind == kind])["f1"]
           for short, kind in (("desat", "desaturation"), ("arousal", "arousal"), ("tachy", "tachycardia"))},
        "arousal_recall": event_agreement(events[events.kind == "arousal"], true_events[true_events.kind == "arousal"])["recall"],
        # Position changes are instants: matched when within 15 s of each other.
        "position_f1": event_agreement(_widened(events[events.kind == "position_change"]),
                                       _widened(true_events[true_events.kind == "position_change"]))["f1"],
        "ahi_true": round(truth.ahi, 2),
        "ahi_err": round(float(len(ours_resp) / tst_h - truth.ahi), 2),
    }
    # A montage without usable airflow (e.g. Sleep-EDF's 1-Hz oro-nasal channel) or SpO2 cannot
    # show those events: its figures are "not measurable", not zeros.
    if get_signal(rec, "AF") is None and get_signal(rec, "Pressure") is None:
        row.update(resp_f1=None, ahi_err=None, note="no usable airflow")
    if get_signal(rec, "SpO2") is None:
        row.update(desat_f1=None)
    if get_signal(rec, "ECG") is None and get_signal(rec, "HR") is None:
        row.update(tachy_f1=None)
    if position_codes(rec) is None:
        row.update(position_f1=None)
    if with_yasa and row["ahi_err"] is not None:
        try:
            hyp = stage_with_yasa(rec)
        except ValueError as exc:  # e.g. a montage without EEG fast enough for YASA
            row["yasa_kappa"] = f"n/a ({exc})"
            return row
        e2e = detect_events(rec, hypnogram=hyp)
        yasa_tst_h = np.isin(hyp, SLEEP_STAGES).sum() * 30 / 3600
        row["ahi_err_yasa"] = round(float(e2e.kind.isin(RESPIRATORY).sum() / yasa_tst_h - truth.ahi), 2)
        row["yasa_kappa"] = agreement(hyp, truth.hypnogram, "truth")["kappa"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--montages", nargs="+", default=["aasm", "shhs", "nox", "mesa"])
    parser.add_argument("--severities", nargs="+", default=["mild", "moderate", "severe"])
    parser.add_argument("--no-yasa", action="store_true", help="skip end-to-end AHI with YASA stages")
    args = parser.parse_args()
    rows = []
    for montage in args.montages:
        for severity in args.severities:
            for seed in args.seeds:
                rows.append(evaluate_night(args.hours, seed, severity, montage, with_yasa=not args.no_yasa))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    for column in ("resp_f1", "desat_f1", "arousal_f1", "arousal_recall", "tachy_f1", "position_f1", "apnea_subtype_acc", "ahi_err",
                   "ahi_err_yasa"):
        if column in table:
            table[column] = pd.to_numeric(table[column])  # None (not measurable) -> NaN, left out of means
    pd.set_option("display.width", 200)
    print(table.to_string(index=False))
    print(f"\nnights: {len(table)} x {args.hours:g} h")
    print(f"respiratory F1: mean {table.resp_f1.mean():.3f}, min {table.resp_f1.min():.3f} (target >= 0.9)")
    print(f"desaturation F1: mean {table.desat_f1.mean():.3f}, min {table.desat_f1.min():.3f} (target >= 0.9)")
    print(f"|AHI error| (true stages): mean {table.ahi_err.abs().mean():.2f}/h, max {table.ahi_err.abs().max():.2f}/h (target <= 2)")
    if "ahi_err_yasa" in table:
        print(f"|AHI error| (YASA stages): mean {table.ahi_err_yasa.abs().mean():.2f}/h, max {table.ahi_err_yasa.abs().max():.2f}/h")
    print(f"arousal F1: mean {table.arousal_f1.mean():.3f} (recall {table.arousal_recall.mean():.3f}); tachycardia F1: mean {table.tachy_f1.mean():.3f}; "
          f"position change F1: mean {table.position_f1.mean():.3f}; apnea subtype accuracy: mean {table.apnea_subtype_acc.mean():.3f}")


if __name__ == "__main__":
    main()
