"""Technician vs automatic: the agreement figures, the scoring switch, the `scoring_agreement` tool
and its questions answered through the agent (scripted model) and the keyword router."""

import json
import numpy as np
import pandas as pd
import pytest
from conftest import call
from langchain_core.messages import ToolMessage

from assistant.agent import route_question, routed_tool
from assistant.session import NightSession, SessionError
from sleeplm.errors import MeasurementError
from sleeplm.io.recording import ReferenceScoring
from sleeplm.measure.agreement import match_events, scoring_agreement, staging_agreement, technician_events, unmatched_events
from sleeplm.measure.analysis import use_scoring
from sleeplm.report.plots import plot_night
from sleeplm.terms import parse_citations
from tools import NightContext, parse_result, run_tool


@pytest.fixture(scope="module")
def compared(_sim_loaded):
    """The simulator night (its scoring in the file stands for the technician's), compared once."""
    from sleeplm.measure.analysis import compare_with_automatic

    rec, analysis = _sim_loaded
    return rec, compare_with_automatic(rec, analysis)


@pytest.fixture
def compared_night(compared):
    rec, analysis = compared
    return NightContext(rec=rec, analysis=analysis, model_status="no SleepLM weights in this test")


def test_staging_agreement_is_sklearns_kappa_and_confusion():
    from sklearn.metrics import cohen_kappa_score

    tech = np.array(["W", "W", "N2", "N2", "N3", "R", "R", "?"], dtype=object)
    auto = np.array(["W", "N1", "N2", "N3", "N3", "R", "W", "N2"], dtype=object)
    result = staging_agreement(tech, auto)
    assert result["n_epochs"] == 7 and result["accuracy"] == round(4 / 7, 3)
    assert result["kappa"] == round(cohen_kappa_score(tech[:7].astype(str), auto[:7].astype(str)), 3)
    confusion = np.array(result["confusion"])
    assert confusion.sum() == 7 and confusion[0].tolist() == [1, 1, 0, 0, 0]  # technician W: once W, once N1
    assert confusion[4].tolist() == [1, 0, 0, 0, 1]                          # technician R: once W, once R
    assert staging_agreement(tech[-1:], auto[-1:])["kappa"] is None  # nothing staged by both


def test_events_are_compared_per_type_at_iou_02(bare_recording):
    rec = bare_recording(n_epochs=20)
    rec.reference = ReferenceScoring(
        stages=np.array(["N2"] * 20, dtype=object),
        events=pd.DataFrame({"onset_s": [60.0, 200.0, 400.0, 100.0], "duration_s": [20.0, 15.0, 12.0, 10.0],
                             "kind": ["apnea", "hypopnea", "hypopnea", "desaturation"],
                             "subtype": ["obstructive", "", "", ""], "label": ["OA", "H", "H", "Desat"]}))
    # Ours: the apnea (IoU 0.75), the first hypopnea scored as an apnea (IoU 0.6), one event the technician
    # did not score; the second hypopnea overlaps too little (IoU 0.1) and counts as missed.
    ours = pd.DataFrame({"kind": ["apnea", "apnea", "hypopnea", "hypopnea"], "subtype": "",
                         "start_s": [65.0, 203.0, 600.0, 410.0], "end_s": [80.0, 215.0, 612.0, 430.0]})
    result = scoring_agreement(rec, np.array(["N2"] * 20, dtype=object), ours,
                               {"ahi": 12.0, "odi3": None, "not_assessable": {"odi3": "no SpO2"}})
    assert result["staging"]["kappa"] is None and result["staging"]["accuracy"] == 1.0  # one class only
    assert result["events"]["respiratory"] == {"n_technician": 3, "n_automatic": 4, "tp": 2, "fp": 2, "fn": 1,
                                               "precision": 0.5, "recall": 0.667, "f1": 0.571}
    assert result["events"]["apnea"]["tp"] == 1 and result["events"]["hypopnea"]["tp"] == 0
    assert "desaturation" not in result["events"] and "no SpO2" in result["not_compared"]["desaturation"]
    assert "arousal" in result["not_compared"]  # the technician scored none
    assert result["indices"]["ahi"] == {"technician": 18.0, "automatic": 12.0}  # 3 events in 10 min of sleep
    assert result["indices"]["odi"] == {"technician": 6.0, "automatic": None}
    missed, extra = unmatched_events(technician_events(rec), ours, "respiratory")
    assert missed["start_s"].tolist() == [400.0] and extra["start_s"].tolist() == [410.0, 600.0]
    assert match_events(ours.iloc[3:], technician_events(rec).iloc[2:3]) == []  # IoU 0.1 < 0.2


def test_compared_analysis_keeps_both_scorings_and_switches(compared):
    rec, analysis = compared
    assert analysis.scoring == "technician" and analysis.summary["scoring"] == "technician"
    assert analysis.staging.source == "reference scoring" and analysis.staging.agreement["with"] == "yasa"
    # The technician's events are used for the kinds they scored; heart-rate and position kinds stay measured.
    scored_by = {row.kind: row.evidence.get("scored_by") for row in analysis.events.itertuples()}
    assert scored_by["apnea"] == scored_by["desaturation"] == "technician"
    technician = technician_events(rec)
    assert analysis.summary["n_apneas"] == int((technician["kind"] == "apnea").sum())
    assert analysis.agreement["indices"]["ahi"]["technician"] == analysis.summary["ahi"]
    automatic = use_scoring(analysis, "automatic")
    assert automatic.staging.source == "yasa" and automatic.summary["scoring"] == "automatic"
    assert automatic.agreement["indices"]["ahi"]["automatic"] == automatic.summary["ahi"]
    assert automatic.summary["agreement"] == analysis.summary["agreement"]
    assert not automatic.events["evidence"].map(lambda e: e.get("scored_by") == "technician").any()
    staging = analysis.agreement["staging"]
    assert np.array(staging["confusion"]).sum() == staging["n_epochs"] > 0
    json.dumps(analysis.agreement)  # summary.json carries it as it is
    with pytest.raises(MeasurementError, match="unknown scoring"):
        use_scoring(analysis, "sleep lab")


def test_overview_figure_shows_both_hypnograms_and_both_event_rows(compared):
    rec, analysis = compared
    fig = plot_night(rec, analysis.staging.hypnogram, analysis.events, "reference scoring", comparison=analysis.scorings)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert len(fig.axes) == 5
    assert "technician" in labels[0] and "automatic" in labels[1]
    assert "technician" in labels[2] and "automatic" in labels[3]
    assert {t.get_text() for t in fig.axes[2].get_yticklabels()} >= {"apnea", "hypopnea", "desaturation"}


def test_scoring_agreement_tool_cites_the_missed_events(compared_night):
    result = parse_result(run_tool("scoring_agreement", {"show_events": "missed"}, compared_night).content)
    agreement = compared_night.analysis.agreement
    assert result["events"] == agreement["events"] and result["indices"] == agreement["indices"]
    assert "answers use the technician's scoring" in result["findings"][5]  # after the count and the first events
    assert any("staging Cohen's kappa " in f for f in result["findings"])
    missed = sum(e["fn"] for kind, e in agreement["events"].items() if kind != "respiratory")
    assert result["n_listed"] == missed > 0
    first = result["listed_events"][0]
    assert {"clock_start", "elapsed_start", "epoch_start", "epoch_end"} <= set(first)
    cited = [f for f in result["findings"] if f.startswith(f"{first['kind']} at ")][0]
    assert parse_citations(cited)[0]["epoch_start"] == first["epoch_start"]
    # A range keeps the listed events inside it.
    late = parse_result(run_tool("scoring_agreement", {"show_events": "extra", "start": "second half"}, compared_night).content)
    assert all(e["epoch_start"] >= compared_night.rec.n_epochs // 2 - 1 for e in late["listed_events"])


def test_scoring_agreement_without_technician_scoring_says_so(known_night):
    known_night.rec.reference = None
    known_night.analysis.agreement = None
    message = run_tool("scoring_agreement", {}, known_night)
    assert message.status == "error" and "No scoring came with this recording" in message.content


def test_the_comparison_is_computed_when_first_asked(_sim_loaded):
    rec, analysis = _sim_loaded  # analysed without the automatic scoring
    night = NightContext(rec=rec, analysis=analysis)
    assert analysis.agreement is None
    result = parse_result(run_tool("scoring_agreement", {"kind": "apnea", "show_events": "extra"}, night).content)
    assert night.analysis.agreement is not None and night.version == 1 and result["listed"] == "extra"
    assert analysis.agreement is None and "agreement" not in analysis.summary  # the shared analysis is untouched


def test_comparison_questions_route_to_the_tool():
    assert routed_tool("How does your scoring compare with the technician's?") == [("scoring_agreement", {})]
    assert routed_tool("Which events did you miss?") == [("scoring_agreement", {"show_events": "missed"})]
    assert route_question("do you agree with the sleep lab's hypnogram?") == [("scoring_agreement", {})]
    assert route_question("compare the first and second half")[0][0] == "compare_periods"


def test_scripted_model_answers_which_events_were_missed(compared_night, scripted_model):
    def quote_missed(messages):  # the model reads the compact result: the count and the first missed event lead
        findings = json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)["findings"]
        return f"Compared with the technician's scoring, {findings[0]} The first: {findings[1]}"

    llm = scripted_model(quote_missed)  # a routed question: the router runs the tool, the model writes the answer
    session = NightSession(llm=llm)
    session.night = compared_night
    turn = session.ask("Which events did you miss?")
    assert turn.mode == "agent" and turn.tool_calls[0]["name"] == "scoring_agreement", (turn.answer, turn.grounding)
    assert turn.tool_calls[0]["args"] == {"show_events": "missed"}
    result = turn.tool_calls[0]["result"]
    first = result["listed_events"][0]
    assert f"{result['n_listed']} event(s) the automatic scoring missed" in turn.answer
    assert f"{first['kind']} at {first['clock_start']}" in turn.answer and f"epochs {first['epoch_start']}" in turn.answer
    assert turn.grounding["unmatched"] == []
    assert turn.route == "router" and len(llm.seen) == 1  # one model call, for the answer


def test_scripted_model_answers_how_the_scorings_compare(compared_night, scripted_model):
    def quote_kappa(messages):
        findings = json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)["findings"]
        return " ".join(findings[:2])

    llm = scripted_model(quote_kappa)
    session = NightSession(llm=llm)
    session.night = compared_night
    turn = session.ask("How does your scoring compare with the technician's?")
    assert turn.mode == "agent" and [c["name"] for c in turn.tool_calls] == ["scoring_agreement"], turn.answer
    assert turn.tool_calls[0]["args"] == {}
    agreement = compared_night.analysis.agreement
    assert f"Cohen's kappa {agreement['staging']['kappa']}" in turn.answer
    assert f"AHI: technician {agreement['indices']['ahi']['technician']}/h" in turn.answer
    assert turn.grounding["unmatched"] == []


def test_tool_only_mode_answers_the_comparison(compared_night):
    session = NightSession(llm="none")
    session.night = compared_night
    turn = session.ask("how does your scoring compare with the technician's?")
    assert turn.mode == "tool-only" and turn.tool_calls[0]["name"] == "scoring_agreement"
    assert "Cohen's kappa" in turn.answer


def test_session_switches_whose_scoring_answers(compared_night):
    session = NightSession(llm="none")
    session.night = compared_night
    before = compared_night.version
    session.set_scoring("automatic")
    assert compared_night.scoring == "automatic" and compared_night.stage_source == "yasa"
    assert compared_night.version == before + 1
    summary = parse_result(run_tool("night_summary", {}, compared_night).content)
    assert summary["scoring"].startswith("the automatic scoring")
    session.set_scoring("technician")
    assert compared_night.stage_source == "reference scoring"
    with pytest.raises(SessionError, match="unknown scoring"):
        session.set_scoring("expert")


def test_a_night_without_scoring_cannot_switch_to_the_technician(known_night):
    session = NightSession(llm="none")
    known_night.rec.reference = None
    known_night.analysis.scoring, known_night.analysis.scorings = "automatic", {}  # as analyze_night leaves it
    session.night = known_night
    with pytest.raises(SessionError, match="no scoring came with this recording"):
        session.set_scoring("technician")


def test_a_technician_scored_night_the_product_cannot_measure(bare_recording):
    """No EEG and no airflow: the technician's AHI still answers; the comparison says what could not be compared."""
    from sleeplm.io.recording import Signal
    from sleeplm.measure.analysis import analyze_night

    rec = bare_recording(n_epochs=20)
    rec.signals["SpO2"] = Signal(np.full(600, 96.0), 1.0, "%", "SpO2")
    rec.reference = ReferenceScoring(
        stages=np.array(["W"] * 4 + ["N2"] * 16, dtype=object),
        events=pd.DataFrame({"onset_s": [200.0], "duration_s": [20.0], "kind": ["apnea"], "subtype": [""],
                             "label": ["OA"], "spo2_nadir": [np.nan]}))
    analysis = analyze_night(rec)
    assert analysis.scoring == "technician" and analysis.summary["ahi"] == 7.5 and analysis.summary["n_apneas"] == 1
    assert analysis.agreement["staging"] is None and "no usable EEG" in analysis.agreement["not_compared"]["staging"]
    assert "no usable airflow" in analysis.agreement["not_compared"]["respiratory"]
    assert analysis.agreement["indices"]["ahi"] == {"technician": 7.5, "automatic": None}
    assert "no EEG" in analysis.staging.unavailable["yasa"]  # the overview says why there is no cross-check
    with pytest.raises(MeasurementError, match="unknown scoring"):
        analyze_night(rec, scoring="expert")


def test_absurd_arguments_get_a_readable_refusal(compared_night):
    for args, expected in (({"show_events": "everything"}, "Invalid arguments"), ({"kind": "snoring"}, "Invalid arguments"),
                           ({"show_events": "missed", "start": "epoch 99999"}, "epoch")):
        message = run_tool("scoring_agreement", args, compared_night)
        assert message.status == "error" and expected in message.content, (args, message.content)


def test_the_pdf_report_carries_the_comparison(compared, tmp_path):
    from sleeplm.report.export import write_report_pdf

    rec, analysis = compared
    common = {"summary": analysis.summary, "hypnogram": analysis.staging.hypnogram, "events": analysis.events.iloc[:3]}
    plain = write_report_pdf(rec, tmp_path / "plain.pdf", **common).read_bytes()
    both = write_report_pdf(rec, tmp_path / "both.pdf", scorings=analysis.scorings, agreement=analysis.agreement,
                            **common).read_bytes()

    def pages(data: bytes) -> int:
        return data.count(b"/Type /Page") - data.count(b"/Type /Pages")

    assert pages(both) == pages(plain) + 1  # the agreement page


def test_scripted_model_chooses_the_tool_for_an_unrouted_question(compared_night, scripted_model):
    def quote_extra(messages):
        findings = json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)["findings"]
        return findings[0]

    question = "Which apneas would I have that nobody in the sleep lab marked?"
    assert not routed_tool(question)  # no sure route: the model picks the tool and its arguments
    llm = scripted_model(call("scoring_agreement", kind="apnea", show_events="extra"), quote_extra)
    session = NightSession(llm=llm)
    session.night = compared_night
    turn = session.ask(question)
    assert turn.mode == "agent" and turn.tool_calls[0]["args"] == {"kind": "apnea", "show_events": "extra"}
    extra = compared_night.analysis.agreement["events"]["apnea"]["fp"]
    assert turn.answer.startswith(f"{extra} apnea event(s) the automatic scoring added (not scored by the technician)")
