"""PHI typed into EDF+ annotations never leaves the loader: not to the model, the page, an export or a log.

A hostile night carries "Pt Jane Margaret Doe DOB 1961-07-04 MRN 12345678 tel +1-555-0100" in
its annotations (alone and after an event label). It goes through every backend path: the agent
with a recording fake chat model that asks for the annotation text and repeats everything it
was sent, the tool-only mode, the CLI's ``ask --json``, the app's chat handler, its downloads
(PDF, CSV, EDF+ annotations, tool trace) and the ``/ask`` endpoint, with every log record kept.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zlib
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import call
from langchain_core.messages import ToolMessage

from sleeplm.io.deid import scrub_text

PHI = "Pt Jane Margaret Doe DOB 1961-07-04 MRN 12345678 tel +1-555-0100"
# The birth year counts only as a number of its own: a timing or size in a log line ("19612 samples",
# "0.1961 s") once matched a bare "1961" and failed the test by chance.
IDENTIFIERS = [r"\bjane\b", r"\bmargaret\b", r"\bdoe\b", r"(?<![\d.])1961(?![\d.])", r"12345678", r"555-0100",
               r"\+1-555"]


def identifiers_in(text: str) -> list[str]:
    return [pattern for pattern in IDENTIFIERS if re.search(pattern, text, re.IGNORECASE)]


def pdf_text(path: Path) -> str:
    """The text drawn in a matplotlib PDF: the literal strings of its (decompressed) content streams."""
    raw = path.read_bytes()
    streams = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", raw, re.S):
        try:
            streams.append(zlib.decompress(match.group(1)))
        except zlib.error:
            streams.append(match.group(1))
    return "".join(part.decode("latin-1") for stream in streams for part in re.findall(rb"\(((?:\\.|[^\\)])*)\)", stream))


@pytest.fixture(scope="module")
def phi_night(tmp_path_factory):
    from sleeplm.synthetic import simulate_night, write_night

    night = simulate_night(duration_h=0.5, seed=11, severity="moderate", sfreq=128, annotations=True,
                           extra_annotations=[(300.0, 10.0, PHI), (600.0, 15.0, f"Obstructive apnea {PHI}")])
    return write_night(night, tmp_path_factory.mktemp("phi") / "night.edf")


def repeat_everything(messages) -> str:
    """A model that copies every tool result it was sent into its answer (as a leaky model would)."""
    payload = " ".join(str(m.content) for m in messages if isinstance(m, ToolMessage))
    return f"The file says this. {payload}"


def test_the_scrubber_removes_each_kind_of_identifier():
    assert identifiers_in(scrub_text(PHI)) == []
    assert scrub_text("Obstructive Apnea") == "Obstructive Apnea"
    cleaned = scrub_text("Name: John Smith, 12 Baker Street; jane.doe@example.org; http://x.org/a; 02-MAY-1951; Haagse_Harry")
    for gone in ("John", "Smith", "Baker", "jane.doe", "x.org", "1951", "Haagse"):
        assert gone not in cleaned
    assert identifiers_in(PHI) and pdf_text  # the checks below can fail


def test_pdf_text_reader_sees_drawn_text(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(tmp_path / "control.pdf") as pdf:
        figure = plt.figure()
        figure.text(0.1, 0.5, PHI)
        pdf.savefig(figure)
        plt.close(figure)
    assert identifiers_in(pdf_text(tmp_path / "control.pdf"))  # a positive control for the export check


def test_no_identifier_in_any_request_export_or_log(phi_night, scripted_model, tmp_path, caplog):
    import app
    from assistant.session import NightSession
    from cli import main as cli_main

    caplog.set_level(logging.DEBUG)
    seen, outputs = [], []

    # 1. The agent, asked for the annotation text, repeats everything it was sent.
    # (An annotation with identifiers sits at 300 s; the model reads the first few items of a list.)
    llm = scripted_model(call("list_events", kind="all", annotation_text=True, start="epoch 10", end="epoch 10"), repeat_everything,
                         call("list_events", call_id="call_2", kind="respiratory"), repeat_everything,
                         call("recording_overview", call_id="call_3"), repeat_everything)
    session = NightSession(llm=llm, workdir=tmp_path / "agent")
    session.load(phi_night, stage_cross_check=False)
    turns = [session.ask(q) for q in ("what do the file's annotations say at epoch 10?", "any breathing events?", "what is in the file?")]
    seen.append(llm.seen)
    outputs += [t.to_dict() for t in turns]
    session.close()

    # 2. Tool-only mode.
    plain = NightSession(llm="none", workdir=tmp_path / "plain")
    plain.load(phi_night, stage_cross_check=False)
    outputs.append(plain.ask("list the events of the night").to_dict())
    plain.close()

    # 3. The CLI's --json answer.
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert cli_main(["ask", str(phi_night), "list the apneas", "--json", "--llm", "none"]) == 0
    outputs.append(printed.getvalue())

    # 4. The app: chat handler, downloads and the /ask endpoint.
    web_llm = scripted_model(call("list_events", kind="all", annotation_text=True), repeat_everything)
    common = {"root": tmp_path / "app", "llm_factory": lambda: web_llm, "registry": {}, "shown_root": tmp_path / "shown"}
    *_, last = app.load_night(str(phi_night), None, owned=False, **common)
    bs = last[0]
    *_, (history, _, _) = app.ask("what do the annotations say?", "clinician", [], bs)
    downloads = [Path(p) for p in app.build_downloads(bs)]
    seen.append(web_llm.seen)
    outputs.append(json.dumps(history, default=str))
    for path in downloads:
        outputs.append(pdf_text(path) if path.suffix == ".pdf" else path.read_bytes().decode("latin-1"))
    assert {p.suffix for p in downloads} >= {".pdf", ".csv", ".json"}
    bs.close()
    api_llm = scripted_model(call("list_events", kind="all", annotation_text=True), repeat_everything)
    upload = tmp_path / "upload.edf"
    upload.write_bytes(phi_night.read_bytes())
    outputs.append(app.api_ask(str(upload), "what do the annotations say?", "clinician", root=tmp_path / "api",
                               llm_factory=lambda: api_llm))
    seen.append(api_llm.seen)

    requests = json.dumps([[[(m.content, getattr(m, "tool_calls", None)) for m in messages] for messages in calls]
                           for calls in seen], default=str)
    assert "annotation_text_quoted" in requests  # the model did get the (scrubbed) annotation text
    logs = "\n".join(record.getMessage() for record in caplog.records)
    for where, text in [("requests", requests), ("logs", logs),
                        *((f"output {i}", json.dumps(o, default=str) if not isinstance(o, str) else o)
                          for i, o in enumerate(outputs))]:
        assert identifiers_in(text) == [], where
    assert "[NAME]" in requests and "[ID]" in requests  # what the model got was the scrubbed text
