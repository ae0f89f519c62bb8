"""The app pointed at a cohort: `serve --cohort DIR` / `serve --nights A B`, the chat and `/ask_cohort`.

The cohort folder is written without Ray (each night through `measure_night`, then the tables),
so these tests stay fast; `serve --nights` measures its two nights on local Ray as the product does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from langchain_core.messages import ToolMessage

import app
from conftest import ScriptedChatModel, call
from sleeplm.cohort.night import measure_night
from sleeplm.cohort.tables import cohort_salt, load_cohort, write_tables
from sleeplm.synthetic import PATIENT_CODE, PATIENT_NAME, simulate_night, write_night
from test_app import free_port

SECRETS = ("Doe_John", "P-007", PATIENT_NAME, PATIENT_CODE)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    """Two 15-min nights of subject "P-007" (severe, then mild) in files with identifying names."""
    folder = tmp_path_factory.mktemp("cohort-app")
    salt = cohort_salt(folder / "out")
    results = []
    for i, severity in enumerate(("severe", "mild")):
        path = write_night(simulate_night(duration_h=0.25, seed=i, severity=severity, sfreq=128, annotations=True),
                           folder / "in" / f"Doe_John_night{i + 1}.edf")
        row = {"path": str(path), "subject_id": "P-007", "night_label": f"night {i + 1}", "channel_map": None}
        results.append(measure_night(row, str(folder / "out"), salt))
    write_tables(folder / "out", results)
    from sleeplm.cohort.report import write_report

    write_report(load_cohort(folder / "out").nights, folder / "out" / "cohort_report.html")
    return folder / "out"


def tool_payload(messages) -> dict:
    return json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)


def quote_findings(messages) -> str:
    """A careful model: the tool's findings, word for word."""
    return " ".join(tool_payload(messages)["findings"])


def scripted(*replies) -> ScriptedChatModel:
    return ScriptedChatModel(messages=iter(replies), seen=[], tools_offered=[])


def open_tab(cohort_dir: Path, root: Path, factory):
    return app.open_cohort(cohort_dir, None, SimpleNamespace(session_hash="tab1"), root=root, llm_factory=factory,
                           registry={})


def test_a_cohort_tab_shows_the_cohort_and_answers_with_a_figure(cohort_dir, tmp_path):
    model = scripted(call("compare_nights", metrics=["ahi"]), quote_findings)
    bs, text, llm_text, preflight, channels, overview, viewer, downloads, chat = open_tab(
        cohort_dir, tmp_path / "sessions", lambda: model)
    try:
        assert app.is_cohort(bs) and "2 nights measured, 0 failed, 1 subjects" in text and "night 1, night 2" in text
        assert "cohort table" in llm_text and Path(overview).is_file() and viewer is None and chat == []
        assert [Path(p).name for p in downloads] == ["cohort_report.html", "tool-trace.json"]
        *_, (history, box, state) = app.ask("did AHI improve between night 1 and night 2?", "clinician", [], bs)
        figures = [m for m in history if isinstance(m["content"], dict)]
        assert len(figures) == 1 and Path(figures[0]["content"]["path"]).is_file()
        nights = load_cohort(cohort_dir).done.set_index("night_label")
        answer = history[-1]["content"]
        for label in ("night 1", "night 2"):
            assert nights.loc[label, "night_id"] in answer and f"{round(nights.loc[label, 'ahi'], 2):g}" in answer
        assert "improved" in answer and bs.turns[-1]["grounding"]["unmatched"] == []
        # Nothing identifying reached the language model.
        sent = json.dumps([[m.content for m in messages] for messages in model.seen], default=str)
        assert all(secret not in sent for secret in SECRETS)
        # One-night panels say what to do instead of failing.
        assert app.follow_citation(bs) == (gr.update(), gr.update())
        with pytest.raises(gr.Error, match="serves a cohort"):
            app.show_epochs("epoch 3", 1, bs)
        assert [Path(p).name for p in app.build_downloads(bs)] == ["cohort_report.html", "tool-trace.json"]
        assert app.refresh_status(bs)[0] == gr.update()
    finally:
        bs.close()
    assert not bs.workdir.exists()


def test_a_folder_that_is_not_a_cohort_is_refused_clearly(tmp_path):
    from sleeplm.errors import CohortInputError

    with pytest.raises(CohortInputError, match="not a cohort folder"):
        app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions", cohort=tmp_path)


@pytest.fixture(scope="module")
def cohort_server(cohort_dir, tmp_path_factory):
    def factory():
        return scripted(call("find_nights", metric="ahi", above=20), quote_findings)

    root = tmp_path_factory.mktemp("cohort-server")
    demo = app.build_app(llm_factory=factory, session_root=root, cohort=cohort_dir)
    _, url, _ = app.launch(demo, port=free_port(), block=False)
    yield SimpleNamespace(url=url, root=root)
    demo.close()


def test_ask_cohort_endpoint_cites_night_ids_and_values(cohort_server, cohort_dir):
    from gradio_client import Client

    client = Client(cohort_server.url, verbose=False)
    assert {"/ask", "/ask_cohort"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    answer = client.predict("which nights have AHI over 20?", "clinician", api_name="/ask_cohort")
    severe = load_cohort(cohort_dir).done.query("ahi > 20")
    assert len(severe) == 1 and severe["night_id"].iloc[0] in answer
    assert f"{round(severe['ahi'].iloc[0], 2):g}" in answer and answer.startswith("1 of 2 nights")
    assert not any(secret in answer for secret in SECRETS)
    assert list(cohort_server.root.iterdir()) == []  # the API's throw-away session is gone
    with pytest.raises(Exception, match=re.escape("Unknown audience 'doctor'")):
        client.predict("which nights have AHI over 20?", "doctor", api_name="/ask_cohort")


def test_serve_nights_measures_two_nights_of_one_person_and_serves_them(monkeypatch, cohort_dir, tmp_path):
    """`serve --nights A B`: measured on local Ray, then the chat compares night 1 and night 2 (tool-only here)."""
    pytest.importorskip("ray")
    from gradio_client import Client

    import cli

    started = []
    real_launch = app.launch

    def launch_in_background(demo, host, port, block=True):
        started.append(demo)
        return real_launch(demo, host, port, block=False)

    monkeypatch.setattr(app, "launch", launch_in_background)
    monkeypatch.setenv("SLEEPLM_LLM", "none")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    nights = sorted((cohort_dir.parent / "in").glob("*.edf"))
    port = free_port()
    assert cli.main(["serve", "--port", str(port), "--nights", *map(str, nights)]) == 0
    try:
        answer = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            "did AHI improve between night 1 and night 2?", "patient", api_name="/ask_cohort")
        assert "night 1" in answer and "night 2" in answer and "improved" in answer
        assert not any(secret in answer for secret in SECRETS)
    finally:
        started[0].close()
        started[0].close_sessions()


def test_serve_refuses_a_folder_that_is_not_a_cohort(tmp_path, capsys):
    import cli

    assert cli.main(["serve", "--cohort", str(tmp_path)]) == 2
    assert "not a cohort folder" in capsys.readouterr().err
