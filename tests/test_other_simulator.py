"""The product end to end on a second, independent simulator (tests/other_simulator.py).

Three imaginary labs record 40-min nights their own way (labels, rates, units, record
durations, EDF+ or plain EDF with a separate scoring file, 20-s or 30-s scoring, three stage
label styles) with planted, known physiology. What must hold: every channel is recognised from
the lab's own labels, the file's scoring is imported as written, the measured events agree with
the planted truth (AHI within a clinically reasonable margin), sub-threshold decoys are not
scored, lead-off stretches are flagged, and answers cite the clock times of the planted events,
across midnight.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import call
from other_simulator import SITES, simulate_other_night, write_other_night

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from evaluation import event_agreement, match_events  # noqa: E402

MINUTES = 40
# Canonical channel (or extra signal) <- the role that must feed it.
FEEDS = {"EEG_C3_A2": "eeg_c3", "EEG_C4_A1": "eeg_c4", "EOG_Left": "eog_l", "EOG_Right": "eog_r", "EMG_Chin": "chin",
         "ECG": "ecg", "THX": "thor", "ABD": "abdo", "AF": "flow", "Pressure": "pressure", "SpO2": "spo2", "HR": "pulse"}
RATE_GROUP = {"eeg_c3": "eeg", "eeg_c4": "eeg", "eog_l": "eog", "eog_r": "eog"}


@pytest.fixture(scope="module", params=sorted(SITES))
def site_night(request, tmp_path_factory):
    """(night, files, recording, analysis) of one lab's 40-min night, scored with the file's own stages and
    the product's own events (the file's events, in use as the technician's, would be the truth itself)."""
    from dataclasses import replace

    from sleeplm.io.reader import load_recording
    from sleeplm.measure.analysis import analyze_night

    night = simulate_other_night(SITES[request.param], minutes=MINUTES, seed=11, ahi=45.0)
    files = write_other_night(night, tmp_path_factory.mktemp(request.param) / "night.edf")
    rec = load_recording(files["recording"], annotations=files.get("scoring"))
    analysis = analyze_night(replace(rec, reference=replace(rec.reference, events=None)), automatic_staging=False)
    assert not any(isinstance(e, dict) and e.get("scored_by") for e in analysis.events["evidence"])
    return night, files, rec, analysis


def test_channels_are_recognised_from_the_labs_own_labels(site_night):
    night, _, rec, _ = site_night
    site = night.site
    infos = {info.canonical: info for info in rec.channels + rec.extra_channels}
    for name, role in FEEDS.items():
        info = infos[name]
        label = site.labels[role]
        assert info.present and not info.substitute, (name, info)
        if role in site.monopolar:  # "C3-M2" written as electrodes C3 and M2: re-referenced
            assert info.derived and info.source == label.replace("-", " - "), (name, info.source)
        else:
            assert info.source == label, (name, info.source)
        assert info.original_sfreq == site.rates[RATE_GROUP.get(role, role)]
    used = " ".join(str(info.source) for info in infos.values())
    assert site.labels["leg"] not in used  # a leg EMG is neither chin EMG nor anything else
    assert rec.signals["EEG_C3_A2"].unit == "uV" and rec.signals["ECG"].unit == "uV"  # mV files converted


def test_clock_format_and_length(site_night):
    night, _, rec, _ = site_night
    assert rec.start_seconds == night.truth.start_seconds
    assert rec.source_format == ("EDF+" if night.site.plus else "EDF")
    assert rec.n_epochs == len(night.truth.stages)  # the tail that is not a whole epoch is dropped


def test_the_files_scoring_is_imported_as_written(site_night):
    night, _, rec, _ = site_night
    truth, ref = night.truth, rec.reference
    assert ref.stages.tolist() == truth.stages.tolist()  # 20-s or 30-s epochs, any label style
    assert "other" not in set(ref.events["kind"])
    for kind in ("apnea", "hypopnea", "desaturation", "arousal", "limb_movement"):
        ours = ref.events[ref.events["kind"] == kind].sort_values("onset_s")
        planted = truth.of(kind)
        assert len(ours) == len(planted), kind
        assert np.allclose(ours["onset_s"], planted["start_s"], atol=0.1), kind
    apneas = ref.events[ref.events["kind"] == "apnea"].sort_values("onset_s")
    assert apneas["subtype"].tolist() == truth.of("apnea")["subtype"].tolist()


def test_measured_events_agree_with_the_planted_truth(site_night):
    night, _, _, analysis = site_night
    truth, events, summary = night.truth, analysis.events, analysis.summary
    respiratory = events[events["kind"].isin(["apnea", "hypopnea"])]
    scored = event_agreement(respiratory, truth.of("apnea", "hypopnea"))
    assert scored["recall"] >= 0.8 and scored["precision"] >= 0.8, scored
    assert len(truth.of("apnea", "hypopnea")) >= 8
    # AHI within 5/h or a quarter of the truth, whichever is wider (severity bands are 5, 15, 30).
    assert abs(summary["ahi"] - truth.ahi()) <= max(5.0, 0.25 * truth.ahi()), (summary["ahi"], truth.ahi())
    assert abs(summary["odi3"] - truth.odi()) <= max(5.0, 0.25 * truth.odi()), (summary["odi3"], truth.odi())
    desats = event_agreement(events[events["kind"] == "desaturation"], truth.of("desaturation"))
    assert desats["recall"] >= 0.8 and desats["precision"] >= 0.8, desats
    # Obstructive vs central apneas: effort that goes on vs effort that stops.
    apneas, planted = events[events["kind"] == "apnea"], truth.of("apnea")
    pairs = match_events(apneas, planted)
    same = [apneas.iloc[i]["subtype"] == planted.iloc[j]["subtype"] for i, j, _ in pairs]
    assert pairs and np.mean(same) >= 0.8, list(zip(apneas["subtype"], planted["subtype"]))


def test_sub_threshold_decoys_are_not_scored(site_night):
    """An 8-14 % flow dip and an 8-s dip are never events; a >= 30 % dip with a 2 % desaturation is a
    hypopnea only if the product saw an arousal after it (rule 1A), and then it says so."""
    night, _, _, analysis = site_night
    respiratory = analysis.events[analysis.events["kind"].isin(["apnea", "hypopnea"])].reset_index(drop=True)
    decoys = night.truth.decoys
    assert len(decoys) >= 2 and set(decoys["kind"]) <= {"decoy_shallow", "decoy_short", "decoy_2pct"}
    for i, j, _ in match_events(respiratory, decoys):
        event = respiratory.iloc[i]
        assert decoys.iloc[j]["kind"] == "decoy_2pct", (event.to_dict(), decoys.iloc[j].to_dict())
        assert event["kind"] == "hypopnea" and event["evidence"]["arousal"] and not event["evidence"]["desaturation_pct"]


def test_sleep_statistics_follow_the_files_stages(site_night):
    night, _, _, analysis = site_night
    stages, summary = night.truth.stages, analysis.summary
    asleep = np.isin(stages, ["N1", "N2", "N3", "R"])
    assert summary["tst_min"] == pytest.approx(asleep.sum() / 2)
    assert summary["se_pct"] == pytest.approx(100 * asleep.mean(), abs=0.01)
    for stage in ("N1", "N2", "N3", "R"):
        assert summary[f"{stage}_pct"] == pytest.approx(100 * (stages == stage).sum() / asleep.sum(), abs=0.01)


def test_lead_off_and_probe_off_are_flagged_not_scored(site_night):
    night, _, _, analysis = site_night
    artefacts, events = analysis.artefacts, analysis.events
    for role, start, end in night.truth.artefacts:
        channel = {"eeg_c4": "EEG_C4_A1", "spo2": "SpO2", "pulse": "HR"}[role]
        if channel == "HR":
            continue  # heart rate comes from the ECG when there is one
        flagged = artefacts[(artefacts["channel"] == channel) & (artefacts["end_s"] > start) & (artefacts["start_s"] < end)]
        covered = sum(min(e, end) - max(s, start) for s, e in zip(flagged["start_s"], flagged["end_s"]))
        assert covered >= 0.8 * (end - start), (channel, start, end, flagged)
        if channel == "SpO2":
            inside = events[(events["kind"] == "desaturation") & (events["end_s"] > start) & (events["start_s"] < end)]
            assert inside.empty, inside


@pytest.mark.parametrize("site_name", ["edfplus_20s", "edfplus_rk"])
def test_answers_cite_the_clock_times_of_the_planted_apneas(site_name, tmp_path, scripted_model):
    """A scripted model asks `list_events` for apneas and quotes the times the tool gave; those
    times are the planted apneas' clock times (the 20-s lab's night crosses midnight)."""
    import json

    from langchain_core.messages import ToolMessage

    from assistant.session import NightSession

    night = simulate_other_night(SITES[site_name], minutes=30, seed=5, lead_off=False, plm=False)
    path = write_other_night(night, tmp_path / "night.edf")["recording"]

    def quote(messages):
        events = json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)["events"]
        return "Apneas at " + ", ".join(f"{e['clock_start']} (epoch {e['epoch_start']})" for e in events) + "."

    session = NightSession(llm=scripted_model(call("list_events", kind="apnea"), quote), workdir=tmp_path)
    session.load(path, stage_cross_check=False)
    turn = session.ask("List the apneas.")  # no "when" form: the model's own list_events call stands (routed_tool)
    listed = turn.tool_calls[0]["result"]["events"]
    planted = night.truth.of("apnea")
    assert len(listed) == len(planted) >= 2
    for event, (_, row) in zip(listed, planted.iterrows()):
        # Within 3 s of the planted onset, in clock time (the tool's envelope edges may differ by a breath).
        offsets = [abs((_seconds(event["clock_start"]) - _seconds(night.truth.clock(row.start_s)) + 43200) % 86400 - 43200)]
        assert min(offsets) <= 3, (event["clock_start"], night.truth.clock(row.start_s))
        assert event["epoch_start"] == int(row.start_s // 30) or abs(event["epoch_start"] * 30 - row.start_s) <= 3
        assert f"{event['clock_start']} (epoch {event['epoch_start']})" in turn.answer
    assert turn.mode == "agent" and turn.grounding["unmatched"] == []
    if site_name == "edfplus_20s":  # 23:41:07 + 30 min: the later apneas are after midnight
        assert any(e["clock_start"].startswith("00:") for e in listed)


def _seconds(clock: str) -> int:
    h, m, s = (int(x) for x in clock.split(":"))
    return h * 3600 + m * 60 + s
