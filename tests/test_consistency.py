"""Caption vs measurement consistency: a caption contradicted by the signal is shown with the measurement and flagged."""

from __future__ import annotations

import pytest
from conftest import call

from assistant.session import NightSession
from sleeplm.report.describe import describe_epochs
from tools import parse_result, run_tool
from tools.captions import consistency_note, disagreements, finding_terms


class ApneaCaptions:
    """A stand-in SleepLM whose respiratory caption always reports apneas."""

    model_status = "stand-in"

    def caption(self, epochs, domain, **kwargs):
        return ["obstructive apnea with oxygen desaturation"] * len(epochs)


def quiet_epoch(night) -> int:
    """An epoch whose measured respiratory description reports airflow and no events."""
    for epoch in range(night.rec.n_epochs):
        text = describe_epochs(night.rec, "respiratory", epoch, epoch, analysis=night.analysis)["text"]
        if "no respiratory events" in text:
            return epoch
    raise AssertionError("the simulator night has no quiet epoch")


def test_an_apnea_caption_over_normal_airflow_is_flagged():
    measured = "Breathing 15/min, regular; airflow at 98% of its baseline; no respiratory events. SpO2 mean 96%, lowest 94%"
    assert disagreements("obstructive apnea with oxygen desaturation", measured) == [
        "breathing: SleepLM says apnea, measurements say normal",
        "oxygen: SleepLM says desaturation, measurements say normal"]
    assert disagreements("normal breathing", "1 obstructive apnea") == ["breathing: SleepLM says normal, measurements say apnea"]
    assert disagreements("regular breathing", measured) == []


def test_the_answer_shows_both_sides_and_the_flag(sim_night, scripted_model):
    sim_night.model = ApneaCaptions()
    epoch = quiet_epoch(sim_night)
    result = parse_result(run_tool("caption_epochs", {"domain": "respiratory", "start": f"epoch {epoch}"}, sim_night).content)
    assert "breathing: SleepLM says apnea, measurements say normal" in result["disagreements"]
    assert any(line.startswith("SleepLM and the measurements disagree on breathing") for line in result["findings"])

    session = NightSession(llm=scripted_model(call("caption_epochs", domain="respiratory", start=f"epoch {epoch}"),
                                              "Breathing in that epoch looked fine."))
    session.night = sim_night
    turn = session.ask(f"what was my breathing like in epoch {epoch}?")
    assert turn.mode == "agent" and turn.answer.startswith("Breathing in that epoch looked fine.")
    assert "SleepLM and the measurements disagree here" in turn.answer
    assert "obstructive apnea with oxygen desaturation" in turn.answer and "no respiratory events" in turn.answer
    # An answer that already reports the disagreement is left as it is.
    assert consistency_note(turn.tool_calls, "SleepLM and the measurements disagree on breathing.") == ""


def test_the_benchmark_counts_a_planted_disagreement_per_domain(sim_night):
    from bench.consistency import count_disagreements

    texts = [describe_epochs(sim_night.rec, "respiratory", e, e, analysis=sim_night.analysis)["text"]
             for e in range(sim_night.rec.n_epochs)]
    quiet = next(e for e, text in enumerate(texts) if "no respiratory events" in text)
    apnea = next(e for e, text in enumerate(texts) if "apnea" in finding_terms(text).get("breathing", ()))
    captions = ["sleep with steady signals"] * len(texts)  # names no finding: never flagged
    captions[quiet] = "obstructive apnea"  # the signal shows normal airflow
    captions[apnea] = "normal breathing"  # the signal shows an apnea
    disagreeing, by_category = count_disagreements(sim_night.rec, sim_night.analysis, "respiratory", captions)
    assert (disagreeing, dict(by_category)) == (2, {"breathing": 2})
    captions[quiet] = "regular breathing"  # agrees with "no respiratory events"
    assert count_disagreements(sim_night.rec, sim_night.analysis, "respiratory", captions)[0] == 1


@pytest.mark.slow  # the demo night analysed and captioned whole: ~1-2 min
def test_the_benchmark_says_random_weights_are_a_plumbing_check(tmp_path, monkeypatch, capsys):
    from bench import consistency

    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["consistency.py", "--demo", "--domains", "respiratory"])
    consistency.main()
    out = capsys.readouterr().out
    assert "the demo night" in out and "180 epochs" in out and "measured by the product's analysis" in out
    assert consistency.RANDOM_WEIGHTS_NOTE in out and "not a quality figure" in out
    row = next(line for line in out.splitlines() if line.startswith("respiratory"))
    assert row.split()[1] == "180"
