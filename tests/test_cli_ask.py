"""`sleeplm-assistant ask FILE "question"`: text trace, --json object, clear errors."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import call

import assistant.cli
from assistant.session import NO_LLM_LABEL, NightSession
from cli import main


def test_ask_json_tool_only(small_edf, capsys):
    assert main(["ask", str(small_edf), "what channels are in the recording?", "--llm", "none", "--json"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1  # one JSON object on one line
    out = json.loads(printed)
    assert set(out) == {"answer", "tool_calls", "grounding", "llm", "llm_messages"}
    assert out["answer"].startswith(NO_LLM_LABEL)
    assert out["tool_calls"][0]["name"] == "recording_overview" and out["tool_calls"][0]["args"] == {}
    assert set(out["tool_calls"][0]) >= {"name", "args", "result"}
    assert set(out["grounding"]) == {"matched", "unmatched"} and out["grounding"]["matched"]
    assert out["tool_calls"][0]["result"]["citation"]["clock_start"] == "22:45:00"
    assert out["llm"] == {"backend": "none", "model": None} and out["llm_messages"] == []
    assert out["grounding"]["unmatched"] == []


def test_ask_json_with_a_chat_model(small_edf, capsys, monkeypatch, scripted_model):
    chat = scripted_model(call("recording_overview"), "The recording starts at 22:45:00 and lasts 0.33 h.")
    monkeypatch.setattr(assistant.cli, "NightSession", lambda llm=None, workdir=None: NightSession(llm=chat, workdir=workdir))
    assert main(["ask", str(small_edf), "when does it start?", "--json", "--audience", "patient"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"answer", "tool_calls", "grounding", "llm", "llm_messages"}
    assert out["llm"]["backend"] == "generic-fake-chat-model"
    assert out["answer"] == "The recording starts at 22:45:00 and lasts 0.33 h."
    assert out["grounding"] == {"matched": ["22:45:00", "0.33"], "unmatched": []}
    roles = [m["role"] for m in out["llm_messages"]]
    assert roles == ["system", "human", "system", "human", "ai", "tool"]
    assert 'pass audience "patient"' in out["llm_messages"][0]["content"]
    assert "Audience: the person who slept" in out["llm_messages"][2]["content"]
    assert out["llm_messages"][4]["tool_calls"] == [{"name": "recording_overview", "args": {}}]


def test_ask_text_trace(small_edf, capsys):
    assert main(["ask", str(small_edf), "plot my night", "--llm", "none"]) == 0
    text = capsys.readouterr().out
    assert "[llm: none; mode: tool-only]" in text
    assert "[tool plot(kind='hypnogram') -> " in text


def test_ask_bad_file_exits_2(tmp_path, capsys):
    bogus = tmp_path / "notes.edf"
    bogus.write_text("not a recording")
    assert main(["ask", str(bogus), "hi", "--llm", "none"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["{file}", "hi", "--llm", "gpt4"], "Unknown LLM backend 'gpt4'"),
    (["{file}", "hi", "--llm", "openai"], "names no model"),
    (["{file}", "   ", "--llm", "none"], "The question is empty"),
    (["{missing}", "hi", "--llm", "none", "--json"], "error:"),
    (["", "hi", "--llm", "none"], "ask got an empty path"),  # not the current folder taken as a cohort
    (["{file}", " ", "hi", "--llm", "none"], "ask got an empty path"),
])
def test_ask_bad_input_exits_2_with_a_message(small_edf, tmp_path, capsys, argv, message):
    argv = [a.format(file=small_edf, missing=tmp_path / "nowhere.edf") for a in argv]
    assert main(["ask", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error:") and message in captured.err


def test_ask_with_an_unusable_backend_says_why(small_edf, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["ask", str(small_edf), "what channels are in the recording?", "--llm", "openai:some-model", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"].startswith("The openai language model is unavailable (No OpenAI-compatible server configured")
    assert out["tool_calls"][0]["name"] == "recording_overview" and out["llm_messages"] == []


def test_ask_uses_the_named_checkpoint_and_explains_a_missing_one(small_edf, tmp_path, capsys):
    missing = tmp_path / "weights.pt"
    assert main(["--checkpoint", str(missing), "ask", str(small_edf), "hi", "--llm", "none"]) == 2
    assert "No checkpoint file at" in capsys.readouterr().err


def test_ask_with_weights_waits_for_the_embeddings(small_edf, tmp_path, capsys, monkeypatch):
    """A one-shot question with named weights searches SleepLM's embeddings, not the fallback."""
    from sleeplm.model.inference import SleepLM

    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"stands for a checkpoint")  # loading is replaced by the tiny model below
    monkeypatch.setenv("SLEEPLM_CHECKPOINT", "")
    monkeypatch.setenv("SLEEPLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(SleepLM, "from_pretrained", classmethod(lambda cls, *a, **k: cls.from_config("sleeplm_tiny")))
    question = "find REM with rapid eye movements"
    assert main(["--checkpoint", str(weights), "ask", str(small_edf), question, "--llm", "none", "--json"]) == 0
    captured = capsys.readouterr()
    assert "SleepLM is embedding 40 epochs" in captured.err
    result = json.loads(captured.out)["tool_calls"][0]["result"]
    assert result["source"] == "sleeplm", result
    assert list((tmp_path / "cache" / "embeddings").glob("*.npy"))


def test_ask_with_weights_exits_cleanly_while_sleeplm_staging_runs(small_edf, tmp_path):
    """The process ends with code 0 although SleepLM's staging of the night was still under way: the
    job stops at its next batch and is joined (a daemon thread left inside torch aborted the
    interpreter at exit: "terminate called without an active exception", code 134)."""
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"stands for a checkpoint")
    code = textwrap.dedent(f"""
        import sys
        from sleeplm.model.inference import SleepLM
        SleepLM.from_pretrained = classmethod(lambda cls, *a, **k: cls.from_config("sleeplm_tiny"))
        from cli import main
        sys.exit(main(["--checkpoint", {str(weights)!r}, "ask", {str(small_edf)!r}, "find REM with rapid eye movements",
                       "--llm", "none", "--json"]))
    """)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "SLEEPLM_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["tool_calls"][0]["result"]["source"] == "sleeplm"


class Terminal:
    """Records each write, as a terminal would show it."""

    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)

    def flush(self):
        pass


def test_ask_streams_the_tool_steps_then_the_answer_as_it_is_written(small_edf, scripted_model):
    from assistant.cli import stream_turn

    def findings(messages):
        return " ".join(json.loads(messages[-1].content)["findings"][:2])

    hostile = "Your SpO2 mean was 95.0%.\x1b]8;;https://evil.example\x07 See the figures.\r"
    for reply, question in ((findings, "Give me a summary of my night"), (hostile, "Give me a summary of my night")):
        session = NightSession(llm=scripted_model(reply))
        session.load(small_edf, stage_cross_check=False)
        terminal = Terminal()
        turn = stream_turn(session, question, "clinician", out=terminal)
        session.close()
        text = "".join(terminal.writes)
        assert not any(ch in text for ch in "\x1b\x07\r")  # no terminal escapes from the model's text
        step = terminal.writes.index("[tool night_summary(audience='clinician') ...]")
        done = next(i for i, w in enumerate(terminal.writes) if w.startswith("[tool night_summary done in"))
        words = [i for i, w in enumerate(terminal.writes) if i > done and w.strip() and not w.startswith(("[", "\n"))]
        assert step < done < words[0] and len(words) > 3  # tool steps first, then the answer word by word
        assert "[route: router; 1 model call(s);" in text and "[tool night_summary(audience='clinician') -> success]" in text
        assert turn.mode == "agent" and text.index(turn.answer.split()[0]) < text.index("[llm: ")


def test_ask_text_streams_through_the_cli(small_edf, capsys, monkeypatch, scripted_model):
    chat = scripted_model(lambda messages: " ".join(json.loads(messages[-1].content)["findings"][:1]))
    monkeypatch.setattr(assistant.cli, "NightSession", lambda llm=None, workdir=None: NightSession(llm=chat, workdir=workdir))
    assert main(["ask", str(small_edf), "Give me a summary of my night"]) == 0
    out = capsys.readouterr().out
    assert out.index("[tool night_summary(audience='clinician') ...]") < out.index("[tool night_summary done in") < out.index("[llm: ")
    assert "[route: router; 1 model call(s)" in out
