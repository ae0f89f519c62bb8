"""Night tools: schemas, citations, sources, fallbacks and readable errors (on a night with known content)."""

import json

import matplotlib.figure
import numpy as np
import pytest

from tools import ALL_TOOLS, parse_result, run_tool
from tools.captions import MAX_CAPTION_EPOCHS, caption_runs, disagreements
from tools.retrieval import merge_hits

TOOL_NAMES = {"recording_overview", "night_summary", "caption_epochs", "find_epochs", "abnormal_periods", "list_events",
              "compare_periods", "plot", "concept_timeline", "scoring_agreement", "explain_event", "ahi_under_rules"}


def ok(message):
    assert message.status == "success", message.content
    result = parse_result(message.content)
    assert isinstance(result, dict)
    json.dumps(result)  # JSON-serialisable
    assert result["source"] and result["findings"]
    return result


def error(message):
    assert message.status == "error"
    return message.content


def test_tool_names_schemas_and_descriptions():
    assert {t.name for t in ALL_TOOLS} == TOOL_NAMES
    for t in ALL_TOOLS:
        schema = t.tool_call_schema.model_json_schema()
        assert "runtime" not in schema["properties"], t.name
        assert len(t.description) > 80, t.name
        for name, prop in schema["properties"].items():
            assert prop.get("description"), (t.name, name)
    caption_schema = next(t for t in ALL_TOOLS if t.name == "caption_epochs").tool_call_schema.model_json_schema()
    assert caption_schema["properties"]["domain"]["enum"] == ["brain", "cardiac", "respiratory", "position_muscle", "stage_event"]


def test_recording_overview(known_night):
    result = ok(run_tool("recording_overview", {}, known_night))
    assert result["n_epochs"] == 240 and result["duration_h"] == 2.0
    assert result["citation"]["clock_start"] == "23:00:00" and result["citation"]["clock_end"] == "01:00:00"
    assert "POS" in result["channels_present"] and "EEG_C3_A2" in result["channels_missing"]
    assert result["extra_signals"] == ["SpO2"]
    assert "unavailable" in result["sleeplm"]
    assert result["stage_source"] == "reference scoring"


@pytest.mark.parametrize("audience", ["clinician", "patient"])
def test_night_summary(known_night, audience):
    result = ok(run_tool("night_summary", {"audience": audience}, known_night))
    assert result["statistics"]["tst_min"] == 95.0 and result["statistics"]["ahi"] == 1.89
    assert result["not_assessable"] == {"hr_mean": "no ECG"}
    text = " ".join(result["findings"])
    assert "1.89" in text and "95.0" in text
    if audience == "patient":
        assert "1 h 35 min" in text and "doctor" in text
    else:
        assert result["findings"][0].startswith("AHI 1.89 events/h (AASM rule 1A: hypopnea = airflow drop >= 30 %")


def test_list_events_cites_clock_elapsed_and_epochs(known_night):
    result = ok(run_tool("list_events", {"kind": "respiratory"}, known_night))
    assert result["count"] == 3
    first = result["events"][0]
    assert (first["kind"], first["subtype"], first["clock_start"], first["elapsed_start"]) == ("apnea", "obstructive", "23:33:20", "0h33m20s")
    assert (first["epoch_start"], first["epoch_end"]) == (66, 67)
    assert "2 apnea, 1 hypopnea" in " ".join(result["findings"])


def test_list_events_range_and_errors(known_night):
    second_half = ok(run_tool("list_events", {"kind": "respiratory", "start": "second half"}, known_night))
    assert [e["kind"] for e in second_half["events"]] == ["hypopnea"]
    clock = ok(run_tool("list_events", {"kind": "all", "start": "23:30", "end": "23:40"}, known_night))
    assert sorted(e["kind"] for e in clock["events"]) == ["apnea", "apnea", "desaturation"]
    assert "after the end" in error(run_tool("list_events", {"start": "00:30", "end": "23:30"}, known_night))
    assert "outside the recording" in error(run_tool("list_events", {"start": "03:00"}, known_night))
    assert "kind" in error(run_tool("list_events", {"kind": "snoring"}, known_night))


def test_caption_range_limit_and_helpers(known_night):
    too_long = error(run_tool("caption_epochs", {"domain": "brain", "start": "epoch 0", "end": "epoch 200"}, known_night))
    assert f"at most {MAX_CAPTION_EPOCHS} epochs" in too_long
    assert "domain" in error(run_tool("caption_epochs", {"domain": "kidney", "start": "epoch 1"}, known_night))
    assert caption_runs(["a", "a", "b", "a"], 10) == [(10, 11, "a"), (12, 12, "b"), (13, 13, "a")]
    assert disagreements("Stage N2 sleep with spindles.", "Mostly REM sleep, rapid eye movements.") == [
        "stage: SleepLM says N2, measurements say R"
    ]
    assert disagreements("Obstructive apnea with desaturation.", "Apneas: 2 obstructive; desaturation 4%.") == []


def test_find_epochs_falls_back_to_measurements(known_night):
    rem = ok(run_tool("find_epochs", {"query": "REM with rapid eye movements"}, known_night))
    assert rem["source"] == "measured (fallback)" and "SleepLM retrieval is unavailable" in rem["fallback_reason"]
    # Eye-movement power rises through the night (0..1): its top 10 % (epochs 216-239) inside REM.
    assert [(e["epoch_start"], e["epoch_end"]) for e in rem["episodes"]] == [(230, 239)]
    assert rem["criteria"][0].startswith("EOG power in the rapid eye-movement band") and "stage R" in rem["criteria"][1]
    assert rem["episodes"][0]["measured"]["extreme"] == 1.0
    breathing = ok(run_tool("find_epochs", {"query": "stopped breathing"}, known_night))
    assert [(e["epoch_start"], e["epoch_end"]) for e in breathing["episodes"]] == [(66, 70)]
    known_night.model, known_night.embedding_progress = object(), 0.4
    computing = ok(run_tool("find_epochs", {"query": "deep sleep"}, known_night))
    assert "still being computed (40% done)" in computing["fallback_reason"]
    assert computing["episodes"][0]["epoch_start"] == 80


def _truth_mask(truth_events, kinds, n_epochs):
    mask = np.zeros(n_epochs, dtype=bool)
    for start_s, end_s in truth_events[truth_events["kind"].isin(kinds)][["start_s", "end_s"]].itertuples(index=False):
        mask[int(start_s // 30) : int(np.ceil(end_s / 30))] = True
    return mask


def test_find_epochs_fallback_searches_measured_features_on_a_simulator_night(sim_night, sim_night_file):
    _, truth = sim_night_file
    features, n = sim_night.analysis.features, sim_night.rec.n_epochs

    def search(query):
        result = ok(run_tool("find_epochs", {"query": query, "top_k": 3}, sim_night))
        assert result["source"] == "measured (fallback)" and result["searched"] in result["findings"][0]
        return result, [(e["epoch_start"], e["epoch_end"]) for e in result["episodes"]]

    oxygen, spans = search("was my oxygen ever low?")
    assert oxygen["criteria"] == ["SpO2 minimum < 90 %"] and spans
    for first, last in spans:  # every episode holds an epoch under 90 % and lies on a true desaturation
        assert features["cardiac_spo2_min_pct"].iloc[first : last + 1].min() < 90
        assert _truth_mask(truth.events, ["desaturation"], n)[first : last + 1].any()
    lows = [e["measured"]["extreme"] for e in oxygen["episodes"]]
    assert lows == sorted(lows)  # deepest first

    heart, spans = search("fast heart rate")
    assert heart["criteria"] == ["mean heart rate > 90 bpm"]
    assert any(_truth_mask(truth.events, ["tachycardia"], n)[a : b + 1].any() for a, b in spans)

    eyes, spans = search("REM with rapid eye movements")
    assert "EOG" in eyes["criteria"][0] and "stage R" in eyes["criteria"][1] and spans
    cut = features["brain_eog_rapid_power_uv2"].quantile(0.9)
    for first, last in spans:
        assert set(sim_night.hypnogram[first : last + 1]) == {"R"}
        assert features["brain_eog_rapid_power_uv2"].iloc[first : last + 1].max() >= cut

    snoring, spans = search("loud snoring with desaturation")
    assert "snore-channel loudness" in snoring["criteria"][0] and snoring["criteria"][1] == "measured desaturation events"
    desaturated = np.zeros(n, dtype=bool)
    for start_s, end_s in sim_night.analysis.events.query("kind == 'desaturation'")[["start_s", "end_s"]].itertuples(index=False):
        desaturated[int(start_s // 30) : int(np.ceil(end_s / 30))] = True
    assert spans and all(desaturated[max(a - 1, 0) : b + 2].any() for a, b in spans)

    limited, _ = search("flow limitation")
    assert limited["criteria"] == ["inspiratory flow flattening (flow limitation) > 0.6 fraction 0-1"]
    nothing, spans = search("a purple elephant")
    assert spans == [] and nothing["searched"].startswith("nothing: the measured search understands")


def test_find_epochs_fallback_says_when_a_criterion_cannot_be_measured(known_night):
    result = ok(run_tool("find_epochs", {"query": "fast heart rate"}, known_night))
    assert result["episodes"] == [] and any(line.startswith("Not searchable: mean heart rate") for line in result["findings"])


def test_merge_hits_joins_adjacent_epochs():
    episodes = merge_hits([(10, 0.2), (11, 0.5), (13, 0.3), (40, 0.9)])
    assert [(e["first"], e["last"], e["score"]) for e in episodes] == [(40, 40, 0.9), (10, 13, 0.5)]


def test_compare_periods(known_night):
    result = ok(run_tool("compare_periods", {"a": "supine", "b": "non-supine"}, known_night))
    supine, lateral = (p["stats"] for p in result["periods"])
    assert (supine["respiratory_events"], lateral["respiratory_events"]) == (2, 1)
    assert supine["spo2_min_pct"] == 85.0 and lateral["spo2_min_pct"] == 96.0
    assert supine["minutes"] == 60.0 and supine["N3_min"] == 20.0
    stages = ok(run_tool("compare_periods", {"a": "REM", "b": "NREM"}, known_night))
    assert [p["stats"]["minutes"] for p in stages["periods"]] == [20.0, 90.0]
    assert stages["periods"][0]["n_spans"] == 2
    halves = ok(run_tool("compare_periods", {"a": "first half", "b": "second half"}, known_night))
    assert [p["stats"]["desaturations"] for p in halves["periods"]] == [1, 0]
    assert "Cannot read" in error(run_tool("compare_periods", {"a": "monday", "b": "second half"}, known_night))


def test_plot_returns_figure_artifact(known_night):
    message = run_tool("plot", {"kind": "events", "start": "first hour"}, known_night)
    result = ok(message)
    assert isinstance(message.artifact, matplotlib.figure.Figure)
    assert result["range"]["epoch_end"] == 119
    assert "at most 10 epochs" in error(run_tool("plot", {"kind": "raw", "start": "epoch 0", "end": "epoch 30"}, known_night))
    raw = run_tool("plot", {"kind": "raw", "start": "epoch 5", "end": "epoch 6"}, known_night)
    assert raw.status == "success" and len(raw.artifact.axes) == 1  # only POS is present


def test_tools_without_analysis_say_so(known_night):
    known_night.analysis = None
    known_night.rec.reference = None
    assert "not available" in error(run_tool("night_summary", {}, known_night))
    assert run_tool("recording_overview", {}, known_night).status == "success"


# ---- on a simulator night with truth --------------------------------------------------------
def overlaps_truth(item, truth_events):
    start, end = item["epoch_start"] * 30, (item["epoch_end"] + 1) * 30
    return bool(((truth_events["start_s"] < end) & (truth_events["end_s"] > start)).any())


def test_every_tool_on_a_simulator_night(sim_night, sim_night_file):
    _, truth = sim_night_file
    resp_truth = truth.events[truth.events["kind"].isin(["apnea", "hypopnea"])]
    events = ok(run_tool("list_events", {"kind": "respiratory"}, sim_night))
    assert events["count"] == int(sim_night.analysis.events["kind"].isin(["apnea", "hypopnea"]).sum()) > 10
    hits = [overlaps_truth(e, resp_truth) for e in events["events"]]
    assert sum(hits) >= 0.8 * len(hits)
    annotations = events["file_annotations"]["events"]
    assert annotations and not any("annotation_text_quoted" in a for a in annotations)  # free text withheld by default
    quoted = ok(run_tool("list_events", {"kind": "respiratory", "annotation_text": True}, sim_night))["file_annotations"]
    assert all(a["annotation_text_quoted"][0] == "'" for a in quoted["events"])
    summary = ok(run_tool("night_summary", {"audience": "clinician"}, sim_night))
    assert summary["statistics"]["ahi"] == round(sim_night.analysis.summary["ahi"], 2) and summary["statistics"]["ahi"] >= 30
    assert summary["source"] == "technician (sleep stages from reference scoring)"  # the file's scoring is the technician's
    compare = ok(run_tool("compare_periods", {"a": "first half", "b": "second half"}, sim_night))
    counts = [p["stats"]["respiratory_events"] for p in compare["periods"]]
    assert sum(counts) == events["count"]
    caption = ok(run_tool("caption_epochs", {"domain": "respiratory", "start": "epoch 20", "end": "epoch 25"}, sim_night))
    assert caption["source"] == "measured" and "SleepLM captions are unavailable" in caption["findings"][0]
    assert caption["measured"]["text"]
    assert ok(run_tool("recording_overview", {}, sim_night))["citation"]["clock_start"] == "22:47:30"
    assert ok(run_tool("plot", {"kind": "raw", "start": "epoch 3"}, sim_night))["range"]["epoch_start"] == 3


def test_sleeplm_retrieval_and_captions_with_a_tiny_model(sim_night, tiny_sleeplm_embeddings):
    model, embeddings = tiny_sleeplm_embeddings
    sim_night.model, sim_night.embeddings = model, embeddings
    found = ok(run_tool("find_epochs", {"query": "REM with rapid eye movements", "top_k": 3}, sim_night))
    assert found["source"] == "sleeplm" and 1 <= len(found["episodes"]) <= 3
    best = model.retrieve("REM with rapid eye movements", embeddings, top_k=1)[0]
    assert found["episodes"][0]["score"] == round(best[1], 3)
    assert found["episodes"][0]["epoch_start"] <= best[0] <= found["episodes"][0]["epoch_end"]
    captions = ok(run_tool("caption_epochs", {"domain": "brain", "start": "epoch 30", "end": "epoch 31"}, sim_night))
    assert captions["source"] == "sleeplm + measured"
    assert [c["source"] for c in captions["captions"]] == ["sleeplm"] * len(captions["captions"])
    assert captions["captions"][0]["text"] == model.caption(sim_night.rec.epochs[30:31], "brain")[0]
    assert isinstance(captions["disagreements"], list)
    assert captions["decoding"] == "greedy"
    beamed = ok(run_tool("caption_epochs", {"domain": "brain", "start": "epoch 30", "beams": 3}, sim_night))
    assert beamed["decoding"] == "beam search, 3 beams"
    assert beamed["captions"][0]["text"] == model.caption(sim_night.rec.epochs[30:31], "brain", beams=3)[0]
    assert "beams" in error(run_tool("caption_epochs", {"domain": "brain", "start": "epoch 30", "beams": 50}, sim_night))


def test_epoch_numbers_may_come_as_json_numbers(known_night):
    result = ok(run_tool("list_events", {"kind": "apnea", "start": 60, "end": 70}, known_night))
    assert (result["range"]["epoch_start"], result["range"]["epoch_end"], result["count"]) == (60, 70, 2)


def test_desaturations_report_the_lowest_spo2(sim_night):
    from dataclasses import replace

    from sleeplm.measure.events import detect_events

    # The measured desaturations carry their nadir (the simulator's scoring in the file does not).
    sim_night.analysis = replace(sim_night.analysis, events=detect_events(sim_night.rec, sim_night.hypnogram))
    result = ok(run_tool("list_events", {"kind": "desaturation"}, sim_night))
    events = sim_night.analysis.events
    nadir = min(e["nadir_pct"] for e in events[events["kind"] == "desaturation"]["evidence"])
    assert any(f.startswith(f"Lowest SpO2 in these events: {round(float(nadir), 1)}% at ") for f in result["findings"])


@pytest.mark.parametrize("start, end, expected", [
    ("23:30", "23:40", (60, 80)),               # clock times
    ("0h30m", "0h40m", (60, 80)),               # elapsed
    ("epoch 60", "epoch 80", (60, 80)),         # epoch numbers
    ("first REM period", None, (150, 179)),     # stage phrase
    ("second REM period", None, (230, 239)),
])
def test_every_time_form_reaches_the_tools(known_night, start, end, expected):
    for name, args in (("list_events", {"kind": "all"}), ("caption_epochs", {"domain": "brain"}), ("plot", {"kind": "events"})):
        result = ok(run_tool(name, {**args, "start": start, "end": end}, known_night))
        assert (result["range"]["epoch_start"], result["range"]["epoch_end"]) == expected, name
        assert {"clock_start", "elapsed_start", "epoch_start"} <= set(result["range"])


@pytest.mark.parametrize("name, args, fragment", [
    ("caption_epochs", {"domain": "brain", "start": "third REM period"}, "this night has 2 R period(s)"),
    ("list_events", {"start": "5h00m"}, "past the end of the recording (2.00 h, 240 epochs)"),
    ("list_events", {"start": "epoch 500"}, "this night has epochs 0 to 239"),
    ("find_epochs", {"query": "REM", "top_k": 500}, "top_k"),
    ("night_summary", {"audience": "everyone"}, "audience"),
    ("compare_periods", {"a": "REM"}, "b"),
])
def test_bad_arguments_come_back_as_readable_tool_errors(known_night, name, args, fragment):
    text = error(run_tool(name, args, known_night))
    assert fragment in text and "Traceback" not in text
