"""The product end to end on longer nights of the second, independent simulator (tests/other_simulator.py).

Each lab of `other_simulator.SITES` records nights its own way (labels, rates, units, EDF+ or plain
EDF with a separate scoring file, 20/30-s scoring epochs, stage label styles); the product loads
them like uploads (no channel map) and measures them with the file's own stages and the product's own
events (the file's scored events are left out of the analysis: in use, as the technician's scoring, they
would be compared with the truth they were written from). Printed per night and pooled:

- channels recognised (canonical <- file label) and the file's scoring read back (stage agreement,
  annotated events per kind against the planted ones);
- measured events against the planted truth, matched one-to-one at IoU >= 0.2
  (`evaluation.event_agreement`): precision and recall (sensitivity) per kind, apnea subtype
  agreement, decoys scored;
- AHI (rule 1A and 1B) and ODI (3 % and 4 %) against the truth's, and their errors;
- TST, SE and stage shares against the truth's;
- with ``--yasa``: the product's automatic staging (YASA, as for a file without scoring) against
  the planted stages (Cohen's kappa).

Run: ``nice .venv/bin/python bench/other_sim.py [--hours 6] [--nights 1] [--seed 0] [--yasa]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from evaluation import event_agreement, match_events  # noqa: E402
from other_simulator import SITES, simulate_other_night, write_other_night  # noqa: E402

KINDS = (("apnea",), ("hypopnea",), ("apnea", "hypopnea"), ("desaturation",), ("arousal",))
SLEEP = ("N1", "N2", "N3", "R")


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    labels = sorted(set(a) | set(b))
    table = pd.crosstab(pd.Categorical(a, labels), pd.Categorical(b, labels), dropna=False).to_numpy(dtype=float)
    n = table.sum()
    observed = np.trace(table) / n
    expected = (table.sum(0) * table.sum(1)).sum() / n**2
    return round(float((observed - expected) / (1 - expected)), 3)


def measure_night(site_name: str, hours: float, seed: int, workdir: Path, yasa: bool) -> dict:
    """Simulate, load, analyse and compare one night; returns the row of figures (and prints the details)."""
    from sleeplm.io.reader import load_recording
    from sleeplm.measure.analysis import analyze_night
    from sleeplm.measure.events import detect_events
    from sleeplm.measure.staging import stage_night

    started = time.perf_counter()
    night = simulate_other_night(SITES[site_name], minutes=hours * 60, seed=seed)
    files = write_other_night(night, workdir / f"{site_name}-{seed}.edf")
    simulated = time.perf_counter()
    rec = load_recording(files["recording"], annotations=files.get("scoring"))
    analysis = analyze_night(replace(rec, reference=replace(rec.reference, events=None)), automatic_staging=False)
    measured = time.perf_counter()
    truth, events, summary = night.truth, analysis.events, analysis.summary
    print(f"\n== {site_name} seed {seed}: {hours:g} h from {truth.start_clock}, {rec.source_format}, "
          f"simulated in {simulated - started:.0f} s, loaded and measured in {measured - simulated:.0f} s")
    print("channels: " + ", ".join(f"{i.canonical}<-{i.source}" for i in rec.channels + rec.extra_channels if i.present))
    ref = rec.reference
    stage_match = float(np.mean(ref.stages == truth.stages)) if ref is not None and ref.stages is not None else 0.0
    annotated = {k: int((ref.events["kind"] == k).sum()) for k in ("apnea", "hypopnea", "desaturation", "arousal",
                                                                   "limb_movement", "other")}
    planted = {k: len(truth.of(k)) for k in ("apnea", "hypopnea", "desaturation", "arousal", "limb_movement")}
    print(f"file scoring read back: stages {stage_match:.3f} of epochs as planted; events {annotated} (planted {planted})")
    row = {"night": f"{site_name}/{seed}", "stage_import": round(stage_match, 3)}
    for kinds in KINDS:
        name = "+".join(kinds)
        scored = event_agreement(events[events["kind"].isin(kinds)], truth.of(*kinds))
        print(f"{name:>17}: precision {scored['precision']:.3f} recall {scored['recall']:.3f} "
              f"(tp {scored['tp']}, fp {scored['fp']}, fn {scored['fn']})")
        row[f"{name}_tp_fp_fn"] = (scored["tp"], scored["fp"], scored["fn"])
    apneas, true_apneas = events[events["kind"] == "apnea"], truth.of("apnea")
    pairs = match_events(apneas, true_apneas)
    row["apnea_subtype_agree"] = round(float(np.mean([apneas.iloc[i]["subtype"] == true_apneas.iloc[j]["subtype"]
                                                     for i, j, _ in pairs])), 3) if pairs else None
    respiratory = events[events["kind"].isin(["apnea", "hypopnea"])]
    row["decoys_scored"] = f"{len(match_events(respiratory, truth.decoys))}/{len(truth.decoys)}"
    rule_1b = detect_events(rec, analysis.staging.hypnogram, "1B", artefacts=analysis.artefacts)
    ahi_1b = rule_1b["kind"].isin(["apnea", "hypopnea"]).sum() / (summary["tst_min"] / 60)
    odi4 = summary["odi4"]
    row.update({
        "ahi": summary["ahi"], "ahi_truth": round(truth.ahi(), 2), "ahi_1b": round(float(ahi_1b), 2),
        "ahi_1b_truth": round(truth.ahi("1B"), 2), "odi3": summary["odi3"], "odi3_truth": round(truth.odi(3), 2),
        "odi4": odi4, "odi4_truth": round(truth.odi(4), 2),
        "tst_min": summary["tst_min"], "tst_truth": truth.tst_h * 60, "se_pct": round(summary["se_pct"], 2),
        "se_truth": round(100 * float(np.isin(truth.stages, SLEEP).mean()), 2),
    })
    asleep = np.isin(truth.stages, SLEEP).sum()
    shares = {s: (round(float(summary[f"{s}_pct"]), 1), round(100 * float((truth.stages == s).sum()) / int(asleep), 1))
              for s in SLEEP}
    print(f"AHI 1A {row['ahi']} vs {row['ahi_truth']}, 1B {row['ahi_1b']} vs {row['ahi_1b_truth']}; ODI3 {row['odi3']} "
          f"vs {row['odi3_truth']}, ODI4 {odi4} vs {row['odi4_truth']}; TST {row['tst_min']} vs {row['tst_truth']} min, "
          f"SE {row['se_pct']} vs {row['se_truth']} %, stage % (measured, planted) {shares}; apnea subtypes agree "
          f"{row['apnea_subtype_agree']}; decoys scored {row['decoys_scored']}")
    if yasa:
        rec.reference.stages = None  # as a file without scoring: the product stages it itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            automatic = stage_night(rec, model=None, automatic=True)
        hyp = np.asarray(automatic.hypnogram, dtype=object)
        scored = hyp != "?"
        row["yasa_kappa"] = _kappa(hyp[scored].astype(str), truth.stages[scored].astype(str))
        print(f"automatic staging ({automatic.source}) vs planted stages: kappa {row['yasa_kappa']}")
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=6.0, help="length of each night (default 6)")
    parser.add_argument("--nights", type=int, default=1, help="nights per lab (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--yasa", action="store_true", help="also stage each night automatically and report kappa")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="other-sim-") as tmp:
        for i, site_name in enumerate(SITES):  # each lab its own patients: other seeds
            for k in range(args.nights):
                rows.append(measure_night(site_name, args.hours, args.seed + 100 * i + k, Path(tmp), args.yasa))
    table = pd.DataFrame(rows).set_index("night")
    print("\n== per night")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.drop(columns=[c for c in table.columns if c.endswith("_tp_fp_fn")]).to_string())
    print("\n== pooled (IoU >= 0.2)")
    for kinds in KINDS:
        name = "+".join(kinds)
        tp, fp, fn = (int(sum(v[i] for v in table[f"{name}_tp_fp_fn"])) for i in range(3))
        print(f"{name:>17}: sensitivity {tp / max(tp + fn, 1):.3f}  precision {tp / max(tp + fp, 1):.3f}  "
              f"(tp {tp}, fp {fp}, fn {fn})")
    for key in ("ahi", "ahi_1b", "odi3", "odi4", "tst", "se"):
        measured = table[key if key not in ("tst", "se") else f"{key}_{'min' if key == 'tst' else 'pct'}"].astype(float)
        error = measured - table[f"{key}_truth"].astype(float)
        print(f"{key} error (measured - truth): mean {error.mean():+.2f}, max |error| {error.abs().max():.2f}")


if __name__ == "__main__":
    main()
