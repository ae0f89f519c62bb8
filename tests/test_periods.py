"""Ranked abnormal periods: the grouping, the `abnormal_periods` tool, routing, follow-ups, and the
evaluation against simulator truth (named periods vs the densest true event clusters)."""

import re

import numpy as np
import pandas as pd
import pytest

from assistant.agent import named_periods, route_question
from assistant.session import NightSession
from bench.evaluation import cited_periods, period_agreement
from conftest import call
from sleeplm.measure.periods import event_periods, quiet_stretches
from tools import parse_result, run_tool


def events_at(*spans, kind="apnea"):
    return pd.DataFrame({"kind": kind, "start_s": [float(a) for a, _ in spans], "end_s": [float(b) for _, b in spans]})


def test_events_closer_than_the_gap_join_and_the_busiest_period_ranks_first():
    # Three events within 2 min of each other, then a lone one, then a pair.
    events = events_at((600, 620), (660, 680), (700, 720), (3000, 3020), (6000, 6010), (6100, 6110))
    hypnogram = np.array(["N2"] * 100 + ["R"] * 140)
    positions = np.array([2] * 120 + [1] * 120)
    spo2 = np.full(240 * 30, 96.0)
    spo2[690:700] = 84.0
    table = event_periods(events, 240, hypnogram, positions, spo2, gap_s=120)
    assert table["n_events"].tolist() == [3, 2, 1] and table["rank"].tolist() == [1, 2, 3]
    first = table.iloc[0]
    assert (first.first_epoch, first.last_epoch) == (20, 23) and first.spo2_min_pct == 84.0
    assert first.stage_min == {"N2": 2.0} and first.position_min == {"Supine": 2.0}
    assert first.events_per_h_sleep == 90.0  # 3 events in 2 min of sleep
    assert table.iloc[1].stage_min == {"R": 2.0} and table.iloc[1].position_min == {"Left": 2.0}
    # A narrower gap splits the periods.
    assert event_periods(events, 240, gap_s=30)["n_events"].tolist() == [2, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="gap_s"):
        event_periods(events, 240, gap_s=-1)
    assert event_periods(events.iloc[:0], 240).empty


def test_quiet_stretches_are_event_free_sleep_longest_first():
    events = events_at((600, 620), (6000, 6010))
    hypnogram = np.array(["W"] * 10 + ["N2"] * 220 + ["W"] * 10)
    quiet = quiet_stretches(events, 240, hypnogram, min_s=600)
    # Epochs 10-19 (5 min) are too short; the last stretch is trimmed to end in sleep.
    assert quiet[["first_epoch", "last_epoch"]].values.tolist() == [[21, 199], [201, 229]]
    assert quiet["minutes"].tolist() == [89.5, 14.5] and quiet["sleep_min"].tolist() == [89.5, 14.5]
    assert quiet_stretches(events, 240, hypnogram, min_s=1800)["first_epoch"].tolist() == [21]


def test_abnormal_periods_tool_on_the_known_night(known_night):
    message = run_tool("abnormal_periods", {"kind": "respiratory"}, known_night)
    result = parse_result(message.content)
    assert message.status == "success" and message.artifact is not None  # the timeline figure
    assert result["n_events"] == 3 and result["n_periods"] == 2
    top = result["periods"][0]
    # Apneas at 2000-2020 s and 2100-2125 s: one period, epochs 66-70 (cited by whole epochs).
    assert (top["rank"], top["epoch_start"], top["epoch_end"], top["n_events"]) == (1, 66, 70, 2)
    assert top["clock_start"] == "23:33:00" and top["kinds"] == {"apnea": 2}
    assert top["stage_min"] == {"N2": 2.5} and top["position_min"] == {"Supine": 2.5} and top["spo2_min_pct"] == 85.0
    assert result["findings"][1].startswith("#1: 23:33:00-23:35:30 (elapsed 0h33m00s-0h35m30s, epochs 66-70): 2 events (2 apneas)")
    assert any(line.startswith("Quiet stretches with none of these events") for line in result["findings"])
    # Patient wording explains the terms.
    known_night.audience = "patient"
    patient = parse_result(run_tool("abnormal_periods", {"kind": "respiratory"}, known_night).content)
    assert "2 breathing pauses (apneas)" in patient["findings"][1] and "light sleep" in patient["findings"][1]
    # Within a stage; bad arguments come back as readable tool errors.
    rem = parse_result(run_tool("abnormal_periods", {"kind": "respiratory", "within": "deep sleep"}, known_night).content)
    assert rem["n_events"] == 0 and rem["findings"][0].startswith("No breathing problems were measured")
    error = run_tool("abnormal_periods", {"kind": "respiratory", "gap_min": -3}, known_night)
    assert error.status == "error" and "gap_min" in error.content


@pytest.mark.parametrize("question, kind", [
    ("When did breathing look abnormal?", "respiratory"), ("when did my oxygen look abnormal?", "desaturation"),
    ("When did my heart rate look abnormal?", "heart_rate"), ("When was my sleep most disturbed?", "disturbed"),
])
def test_when_questions_route_to_ranked_periods(question, kind):
    assert route_question(question) == [("abnormal_periods", {"kind": kind})]


def test_follow_ups_resolve_against_the_named_periods():
    result = {"periods": [{"rank": 1, "epoch_start": 744, "epoch_end": 858, "clock_start": "04:59:30"},
                          {"rank": 2, "epoch_start": 535, "epoch_end": 618, "clock_start": "03:15:00"}]}
    calls = [{"name": "abnormal_periods", "args": {"kind": "desaturation"}, "result": result, "status": "success"}]
    named = named_periods("Mostly at 03:15 (epochs 535-618).", calls)
    assert [p["rank"] for p in named["periods"]] == [2]  # only what the answer named
    named = named_periods("Here they are.", calls)
    assert route_question("And in REM?", previous=named) == [("abnormal_periods", {"kind": "desaturation", "within": "REM"})]
    assert route_question("what about the second half?", previous=named) == [
        ("abnormal_periods", {"kind": "desaturation", "start": "second half"})]
    assert route_question("show me that period", previous=named) == [
        ("plot", {"kind": "events", "start": "epoch 744", "end": "epoch 858"})]
    assert route_question("show me the second period", previous=named)[0][1]["start"] == "epoch 535"
    for word in ("last", "final", "latest"):  # the highest-numbered period of the previous answer, not #1
        assert route_question(f"show me the {word} period", previous=named) == [
            ("plot", {"kind": "events", "start": "epoch 535", "end": "epoch 618"})], word
    for question in ("show me it", "plot that", "Show me this."):
        assert route_question(question, previous=named) == [("plot", {"kind": "events", "start": "epoch 744", "end": "epoch 858"})]
    assert route_question("show me it") == []  # no earlier periods: nothing to show
    # Without a previous answer's periods the same words are ordinary questions.
    assert route_question("what about the second half?")[0][0] == "compare_periods"


def tool_payload(messages):
    import json

    from langchain_core.messages import ToolMessage

    return json.loads([m for m in messages if isinstance(m, ToolMessage)][-1].content)


def test_scripted_follow_ups_after_a_periods_answer(known_night, scripted_model):
    """The periods question and its follow-ups ("show me that period", "And in REM?") are resolved by
    the router: their tools run without a model call and the model writes each answer in one call."""
    def name_first_period(messages):
        p = tool_payload(messages)["periods"][0]
        return f"Breathing was most disturbed at {p['clock_start']}-{p['clock_end']} (epochs {p['epoch_start']}-{p['epoch_end']})."

    llm = scripted_model(name_first_period, "The figure shows that period.", lambda m: " ".join(tool_payload(m)["findings"]))
    session = NightSession(llm=llm)
    session.night = known_night
    first = session.ask("when did breathing look abnormal?")
    assert first.mode == "agent" and "epochs 66-70" in first.answer
    shown = session.ask("show me that period")
    assert shown.tool_calls[0]["args"] == {"kind": "events", "start": "epoch 66", "end": "epoch 70"}
    assert shown.tool_calls[0]["status"] == "success" and shown.artifacts
    rem = session.ask("And in REM?")
    # The one hypopnea at 5000 s falls in the REM epochs 150-179.
    assert rem.tool_calls[0]["args"]["within"] == "REM" and "#1: 00:23:00-00:24:00" in rem.answer
    assert "1 event (1 hypopnea)" in rem.answer and "Quiet stretches" not in rem.answer
    assert [t.route for t in (first, shown, rem)] == ["router"] * 3 and llm.tools_offered == [] and len(llm.seen) == 3


def test_a_follow_up_on_named_periods_plots_the_named_period(known_night, scripted_model):
    """'show me that period', 'plot that' after named periods: the plot of the period just named
    (the 1.5B model, asked, called caption_epochs instead), with no tool offered to the model."""
    def name_first_period(messages):
        p = tool_payload(messages)["periods"][0]
        return f"Breathing was most disturbed at {p['clock_start']}-{p['clock_end']} (epochs {p['epoch_start']}-{p['epoch_end']})."

    llm = scripted_model(name_first_period, "The figure shows that period.", "The figure shows it again.")
    session = NightSession(llm=llm)
    session.night = known_night
    session.ask("when did breathing look abnormal?")
    shown = session.ask("show me that period")
    assert [c["name"] for c in shown.tool_calls] == ["plot"] and shown.artifacts
    assert shown.tool_calls[0]["args"] == {"kind": "events", "start": "epoch 66", "end": "epoch 70"}
    again = session.ask("plot that")
    assert again.tool_calls[0]["args"] == {"kind": "events", "start": "epoch 66", "end": "epoch 70"}
    assert llm.tools_offered == [] and shown.usage["model_calls"] == again.usage["model_calls"] == 1


def test_tool_only_follow_ups(known_night):
    session = NightSession(llm="none")
    session.night = known_night
    first = session.ask("when did breathing look abnormal?")
    assert first.tool_calls[0]["name"] == "abnormal_periods" and first.artifacts
    assert first.grounding["unmatched"] == []
    shown = session.ask("show me that period")
    assert shown.tool_calls[0]["name"] == "plot" and shown.tool_calls[0]["args"]["start"] == "epoch 66"
    half = session.ask("what about the second half?")
    assert half.tool_calls[0]["args"] == {"kind": "respiratory", "start": "second half"}


def test_cited_periods_skip_quiet_stretches_and_the_whole_night():
    answer = ("12 events over the whole night (epochs 0-239). #1: 01:00 (epochs 10-20). Quiet stretches with none of "
              "these events: epochs 100-200. #2: epochs 30-31.")
    assert cited_periods(answer, 240) == [(10, 20), (30, 31)]


def _evaluate_tool_only(path, truth):
    session = NightSession(llm="none")
    session.load(path, stage_cross_check=False)
    turn = session.ask("when did breathing look abnormal?")
    true = truth.events[truth.events["kind"].isin(["apnea", "hypopnea"])]
    session.close()
    return period_agreement(turn.answer, true, len(truth.hypnogram), truth.hypnogram), turn


def test_named_periods_match_the_densest_true_clusters(sim_night_file):
    """Tool-only answer on the simulator night: the named periods overlap the truth's densest clusters."""
    agreement, turn = _evaluate_tool_only(*sim_night_file)
    assert turn.mode == "tool-only" and agreement["named"] >= 1
    assert agreement["hit"] >= min(4, agreement["n_true"]) and agreement["outside"] <= agreement["named"] // 5


@pytest.mark.slow
@pytest.mark.parametrize("severity, seed", [("moderate", 1), ("severe", 2)])
def test_eight_hour_nights_top_five_periods(tmp_path, severity, seed):
    from sleeplm.synthetic import load_truth, simulate_night, write_night

    path = write_night(simulate_night(8.0, seed=seed, severity=severity, sfreq=128, annotations=True), tmp_path / "night.edf")
    agreement, _ = _evaluate_tool_only(path, load_truth(path))
    assert agreement["n_true"] == 5 and agreement["named"] == 5
    assert agreement["hit"] >= 4 and agreement["outside"] <= 1


@pytest.mark.slow
def test_embedded_llm_follow_ups_resolve_against_the_named_periods(sim_night):
    """The embedded model answers 'when did breathing look abnormal?' and its follow-ups on the
    simulator night; each follow-up's tools run on what the first answer named."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llm)")
    from assistant.local_llm import LocalModelUnavailable, load_local_chat_model

    try:
        model, _ = load_local_chat_model("1.5b", n_threads=2)
    except LocalModelUnavailable as exc:
        pytest.skip(f"embedded model not available: {exc}")
    session = NightSession(llm=model)
    session.night = sim_night
    first = session.ask("when did breathing look abnormal?")
    assert [c["name"] for c in first.tool_calls][:1] == ["abnormal_periods"]
    named = session.night.named_periods["periods"]
    assert named and first.grounding["unmatched"] == []

    def on_named_period(call):
        spans = [re.findall(r"\d+", str(call["args"].get(key) or "")) for key in ("start", "end")]
        epochs = [int(n[0]) for n in spans if n]
        return bool(epochs) and any(p["epoch_start"] <= e <= p["epoch_end"] for p in named for e in epochs)

    shown = session.ask("show me that period")
    assert any(c["name"] == "plot" and on_named_period(c) for c in shown.tool_calls), shown.tool_calls
    rem = session.ask("And in REM?")
    assert any(c["name"] == "abnormal_periods" and c["args"].get("within") == "REM" for c in rem.tool_calls), rem.tool_calls
    assert rem.grounding["unmatched"] == []
