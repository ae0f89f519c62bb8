"""Caption vs measurement consistency: a caption contradicted by the signal is shown with the measurement and flagged."""

from __future__ import annotations

from conftest import call

from assistant.session import NightSession
from sleeplm.report.describe import describe_epochs
from tools import parse_result, run_tool
from tools.captions import consistency_note, disagreements


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
