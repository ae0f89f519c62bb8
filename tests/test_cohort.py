"""Cohorts on Ray Data: tidy tables, a bad file recorded, resume after a kill, SleepLM stage, CLI.

One local Ray session (2 CPUs) is shared by every test here and shut down at the end.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from sleeplm.cohort import CohortInputError, discover_nights, load_cohort, run  # noqa: E402
from sleeplm.cohort.night import PARTS  # noqa: E402
from sleeplm.synthetic import PATIENT_CODE, PATIENT_NAME, simulate_night, write_night  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_GOOD = 3


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def cohort_input(tmp_path_factory) -> Path:
    """Three 15-min simulated nights (own scoring) in sub-folders, plus a file that is not a recording."""
    folder = tmp_path_factory.mktemp("cohort_in")
    for i, severity in enumerate(("severe", "mild", "moderate")):
        night = simulate_night(duration_h=0.25, seed=i, severity=severity, sfreq=128, annotations=True)
        write_night(night, folder / f"subject{i}" / f"night{i}.edf")
    (folder / "broken.edf").write_bytes(b"not an edf at all" * 10)
    return folder


@pytest.fixture(scope="module")
def full_run(ray_session, cohort_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort_full")
    return out, run(cohort_input, out)


def test_folder_run_writes_tidy_tables_and_records_the_bad_file(full_run, cohort_input):
    out, cohort = full_run
    nights = cohort.nights
    assert list(nights["status"]).count("done") == N_GOOD and list(nights["status"]).count("failed") == 1
    done = cohort.done
    assert done["night_id"].is_unique and done["night_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert set(done["staging_source"]) == {"reference scoring"} and set(done["rule"]) == {"1A"}
    assert done["channels_present"].str.contains("EEG_C3_A2").all() and done["ahi"].notna().all()
    assert nights.loc[nights["status"] == "failed", "errors"].iloc[0].startswith("NotARecordingError: ")
    # The failure is in failed.csv with its class and message; the good nights are all there.
    failed = pd.read_csv(out / "failed.csv")
    assert list(failed.columns) == ["file", "error_class", "message"]
    assert failed["file"].tolist() == [str(cohort_input / "broken.edf")] and failed["error_class"].tolist() == ["NotARecordingError"]
    hyp = cohort.hypnograms
    assert len(hyp) == done["n_epochs"].sum() == N_GOOD * 30
    assert set(cohort.events["night_id"]) <= set(done["night_id"]) and len(cohort.events) > 0
    assert (out / "cohort_report.html").read_text().count("data:image/png;base64,") == 1
    assert len((out / "salt").read_text().strip()) == 32


def test_cohort_figures_are_those_of_the_single_night_path(full_run, cohort_input):
    from sleeplm import load_recording
    from sleeplm.measure.analysis import analyze_night

    _, cohort = full_run
    rec = load_recording(cohort_input / "subject0" / "night0.edf")
    single = analyze_night(rec, automatic_staging=False).summary
    severe = cohort.done.sort_values("ahi").iloc[-1]
    assert severe["ahi"] == pytest.approx(single["ahi"]) and severe["tst_min"] == pytest.approx(single["tst_min"])


def test_no_file_name_or_header_field_reaches_the_tables(full_run):
    out, _ = full_run
    for name in ("nights.parquet", "events.parquet", "hypnograms.parquet", "cohort_report.html"):
        raw = (out / name).read_bytes()
        for secret in (b"night0", b"subject0", PATIENT_NAME.encode(), PATIENT_CODE.encode()):
            assert secret not in raw, (name, secret)


def test_manifest_groups_a_subjects_nights_by_salted_hash(ray_session, cohort_input, tmp_path, full_run):
    manifest = tmp_path / "nights.csv"
    pd.DataFrame({
        "path": [str(cohort_input / "subject0" / "night0.edf"), str(cohort_input / "subject1" / "night1.edf")],
        "subject_id": ["P-001", "P-001"], "night_label": ["night 1", "night 2"],
    }).to_csv(manifest, index=False)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(full_run[0] / "salt", out / "salt")
    nights = run(manifest, out).nights
    assert sorted(nights["night_label"]) == ["night 1", "night 2"] and nights["night_id"].is_monotonic_increasing
    assert nights["subject_id"].nunique() == 1 and "P-001" not in nights["subject_id"].iloc[0]
    # Same salt, same content and options: the same night ids as the folder run.
    assert set(nights["night_id"]) <= set(full_run[1].done["night_id"])


def test_resumed_nights_take_this_runs_subject_ids_and_labels(ray_session, cohort_input, tmp_path, full_run):
    """Nights already done under the folder's subjects, listed again in a manifest under one subject."""
    from ray.data import DataContext

    out = tmp_path / "again"
    shutil.copytree(full_run[0], out)
    manifest = tmp_path / "nights.csv"
    pd.DataFrame({
        "path": [str(cohort_input / "subject0" / "night0.edf"), str(cohort_input / "subject1" / "night1.edf")],
        "subject_id": ["P-001", "P-001"], "night_label": ["night 1", "night 2"],
    }).to_csv(manifest, index=False)
    context = DataContext.get_current()
    context.op_resource_reservation_enabled, context.max_errored_blocks = True, 3
    nights = run(manifest, out).nights
    # run() changed them for its own dataset only: the process's Ray Data settings are back.
    assert context.op_resource_reservation_enabled is True and context.max_errored_blocks == 3
    before = full_run[1].done.set_index("night_id")
    assert set(nights["night_id"]) <= set(before.index)  # resumed, not measured again
    assert nights["subject_id"].nunique() == 1 and set(nights["subject_id"]).isdisjoint(before["subject_id"])
    assert sorted(nights["night_label"]) == ["night 1", "night 2"]
    assert nights["ahi"].tolist() == before.loc[nights["night_id"], "ahi"].tolist()


def test_folder_layout_gives_salted_subject_ids(full_run, cohort_input):
    """INPUT/<subject>/<night>.edf: the subject folder groups nights, its name never reaches the tables."""
    tasks = {Path(t.path).name: t.subject_id for t in discover_nights(cohort_input)}
    assert tasks == {"night0.edf": "subject0", "night1.edf": "subject1", "night2.edf": "subject2", "broken.edf": None}
    out, cohort = full_run
    done, failed = cohort.done, cohort.nights[cohort.nights["status"] == "failed"]
    assert done["subject_id"].nunique() == N_GOOD and done["subject_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert failed["subject_id"].isna().all()  # broken.edf lies in INPUT itself: no subject
    assert b"subject0" not in (out / "nights.parquet").read_bytes()


def test_failed_nights_are_not_measured_again_unless_retry_failed(ray_session, full_run, cohort_input, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(full_run[0], out)
    failed_id = full_run[1].nights.query("status == 'failed'")["night_id"].iloc[0]
    (mark,) = (out / "failures").glob("*.json")
    assert mark.stem == failed_id and json.loads(mark.read_text())["error_class"] == "NotARecordingError"
    recorded = mark.stat().st_ino
    resumed = run(cohort_input, out)  # everything done or failed before: nothing is measured
    assert mark.stat().st_ino == recorded
    pd.testing.assert_frame_equal(resumed.nights, full_run[1].nights)
    assert resumed.failed.drop(columns="file").equals(full_run[1].failed.drop(columns="file"))
    retried = run(cohort_input, out, retry_failed=True)  # measured again: it fails again, recorded anew
    assert mark.stat().st_ino != recorded
    pd.testing.assert_frame_equal(retried.nights, full_run[1].nights)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(CohortInputError, match="does not exist"):
        discover_nights(tmp_path / "missing")
    with pytest.raises(CohortInputError, match="no EDF"):
        discover_nights(tmp_path)
    bad = tmp_path / "m.csv"
    bad.write_text("file,subject\nx.edf,1\n")
    with pytest.raises(CohortInputError, match="'path' required"):
        discover_nights(bad)
    bad.write_text('path,channel_map\nx.edf,"[1, 2]"\n')
    with pytest.raises(CohortInputError, match="JSON object"):
        discover_nights(bad)
    with pytest.raises(CohortInputError, match="not a cohort folder"):
        load_cohort(tmp_path)


def test_a_one_cpu_night_task_loads_on_one_thread(ray_session):
    """Ray gives each task its CPUs in OMP_NUM_THREADS (unless the user pinned it): the loader keeps to them."""
    from sleeplm.io.reader import _load_threads

    pinned = os.environ.get("OMP_NUM_THREADS")
    expected = min(2, int(pinned)) if pinned and pinned.isdigit() and int(pinned) > 0 else 1
    assert ray.get(ray.remote(num_cpus=1)(_load_threads).remote()) == expected


def test_one_worker_measures_one_night_at_a_time(ray_session, cohort_input, full_run, tmp_path, monkeypatch):
    """With every CPU in use Ray Data keeps one more night queued at Ray's scheduler; with fewer workers
    than CPUs it must not, or the queued night would start on the free CPU."""
    import sleeplm.cohort.runner as runner

    def logged(row, out_dir, salt, **options):  # a closure: Ray pickles it by value for its workers
        import json, os, time  # noqa: E401
        from sleeplm.cohort.night import measure_night

        started = time.time()
        result = measure_night(row, out_dir, salt, **options)
        with open(os.path.join(out_dir, "intervals.jsonl"), "a") as log:
            log.write(json.dumps([started, time.time()]) + "\n")
        return result

    monkeypatch.setattr(runner, "measure_night", logged)
    out = tmp_path / "one_worker"
    cohort = run(cohort_input, out, workers=1)
    intervals = sorted(json.loads(line) for line in (out / "intervals.jsonl").read_text().splitlines())
    assert len(intervals) == N_GOOD + 1 and list(cohort.nights["status"]).count("done") == N_GOOD
    assert all(later[0] >= earlier[1] for earlier, later in zip(intervals, intervals[1:])), intervals


def test_with_every_cpu_in_use_a_night_per_cpu_waits_queued(ray_session, cohort_input, full_run, tmp_path, monkeypatch):
    """The default run (a worker per CPU) hands Ray Data a task pool one night per CPU larger than the CPUs,
    so a freed CPU starts the next night from Ray's own queue; the nights still all come out done."""
    sizes = []

    class RecordedPool(ray.data.TaskPoolStrategy):
        def __init__(self, size=None, **kwargs):
            sizes.append(size)
            super().__init__(size=size, **kwargs)

    monkeypatch.setattr(ray.data, "TaskPoolStrategy", RecordedPool)
    cohort = run(cohort_input, tmp_path / "queued")
    cpus = int(ray.cluster_resources()["CPU"])
    assert sizes == [min(2 * cpus, N_GOOD + 1)]
    assert list(cohort.nights["status"]).count("done") == N_GOOD


def test_a_night_that_kills_its_worker_is_reported_and_the_run_goes_on(ray_session, cohort_input, full_run, tmp_path,
                                                                        monkeypatch):
    """A night whose worker process dies (here: exits; in life the OOM killer) is tried once more, then
    recorded in failed.csv as WorkerLost; the other nights are measured."""
    import sleeplm.cohort.runner as runner

    def dies_on_night1(row, out_dir, salt, **options):  # a closure: Ray pickles it by value for its workers
        import os
        from sleeplm.cohort.night import measure_night

        if row["path"].endswith("night1.edf"):
            os._exit(1)
        return measure_night(row, out_dir, salt, **options)

    monkeypatch.setattr(runner, "measure_night", dies_on_night1)
    out = tmp_path / "worker_dies"
    cohort = run(cohort_input, out)
    failed = pd.read_csv(out / "failed.csv")
    lost = failed[failed["error_class"] == "WorkerLost"]
    assert lost["file"].tolist() == [str(cohort_input / "subject1" / "night1.edf")]
    assert "never reported back" in lost["message"].iloc[0]
    assert list(cohort.nights["status"]).count("done") == N_GOOD - 1


def test_killed_run_resumes_to_the_same_tables(ray_session, cohort_input, full_run, tmp_path):
    """Kill a run part-way (after a night is written), resume it, and get the uninterrupted run's tables.

    The killed run cannot finish first: its manifest holds, beside the cohort's files, a named
    pipe no one writes to, so the worker reading it waits until the kill (the other worker goes on
    writing nights). The resumed run reads the folder itself (no pipe in it).
    """
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(full_run[0] / "salt", out / "salt")  # same salt, so the same ids as the uninterrupted run
    gate = tmp_path / "gate.edf"
    os.mkfifo(gate)
    manifest = tmp_path / "killed.csv"
    files = sorted(cohort_input.rglob("*.edf"))
    subjects = [p.parent.name if p.parent != cohort_input else "" for p in files]  # as the folder layout gives them
    pd.DataFrame({"path": [str(gate), *map(str, files)], "subject_id": ["", *subjects]}).to_csv(manifest, index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "cohort.log"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "cohort", str(manifest), "--out", str(out), "--workers", "2",
         "--address", ray_session],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)
    parts = out / PARTS

    def finished() -> list[Path]:
        return [p for p in parts.glob("*") if not p.name.startswith(".")] if parts.is_dir() else []

    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None and not finished():
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"the cohort run ended (exit {proc.returncode}) although a night could not finish:\n"
                        + log.read_text()[-3000:])
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        try:  # let the worker still waiting on the pipe see its end (it is then a failed night of a dead run)
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    killed_with = len(finished())
    assert 1 <= killed_with <= N_GOOD and not (out / "nights.parquet").exists(), "the run was not killed part-way"

    cohort = run(cohort_input, out)
    assert not list(parts.glob(".tmp-*"))
    for name in ("nights.parquet", "events.parquet", "hypnograms.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(full_run[0] / name))
    assert pd.read_csv(out / "failed.csv").drop(columns="file").equals(
        pd.read_csv(full_run[0] / "failed.csv").drop(columns="file"))
    assert len(cohort.done) == N_GOOD


def test_sleeplm_stage_writes_float16_embeddings_and_captions(ray_session, cohort_input, tmp_path):
    from sleeplm.model.inference import SleepLM

    manifest = tmp_path / "one.csv"
    manifest.write_text(f"path,night_label\n{cohort_input / 'subject1' / 'night1.edf'},baseline\n")
    cohort = run(manifest, tmp_path / "out", model=functools.partial(SleepLM.from_config, "sleeplm_tiny"))
    night = cohort.done.iloc[0]
    assert night["sleeplm_checkpoint"] == SleepLM.from_config("sleeplm_tiny").checkpoint_id
    emb = cohort.embeddings(night["night_id"])
    assert emb.dtype == np.float16 and emb.shape == (night["n_epochs"], 512)
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=1e-2)
    captions = cohort.captions
    assert len(captions) == 5 * night["n_epochs"] and captions["caption"].str.len().gt(0).all()
    with pytest.raises(CohortInputError, match="no SleepLM embeddings"):
        cohort.embeddings("0" * 16)


def test_the_requested_precision_travels_to_the_workers_with_the_checkpoint(ray_session, tmp_path, monkeypatch):
    """--precision reaches the SleepLM actors inside their loader, not through this process's environment
    (which a remote cluster's workers do not see): a local Ray worker receives what was asked for."""
    from sleeplm.cohort.runner import checkpoint_loader
    from sleeplm.model.precision import PRECISION_ENV

    weights = str(tmp_path / "weights.pt")

    @ray.remote
    def received(loader):
        return loader.args[0], loader.keywords["precision"], os.environ.get(PRECISION_ENV)

    monkeypatch.setenv(PRECISION_ENV, "bf16")  # set after Ray started: its workers do not have it
    path, asked, worker_env = ray.get(received.remote(checkpoint_loader(weights, "int8")))
    assert (path, asked) == (weights, "int8") and worker_env != "bf16"
    assert ray.get(received.remote(checkpoint_loader(weights)))[1] == "bf16"  # resolved here, carried there


def test_cli_cohort_passes_precision_and_checkpoint_to_the_run(monkeypatch, tmp_path):
    import types

    import cli
    import sleeplm.cohort
    from sleeplm.model.precision import PRECISION_ENV

    seen = {}
    monkeypatch.setattr(sleeplm.cohort, "run", lambda *a, **k: seen.update(k) or types.SimpleNamespace(done=[1], failed=[]))
    for name in ("SLEEPLM_CHECKPOINT", PRECISION_ENV):
        monkeypatch.delenv(name, raising=False)
    weights = str(tmp_path / "weights.pt")
    assert cli.main(["--checkpoint", weights, "cohort", str(tmp_path), "--out", str(tmp_path / "o"), "--precision", "int8"]) == 0
    assert (seen["model"], seen["precision"]) == (weights, "int8")


def test_cli_cohort_reports_counts(ray_session, cohort_input, tmp_path, capsys):
    import cli

    code = cli.main(["cohort", str(cohort_input / "subject2"), "--out", str(tmp_path / "out"), "--retry-failed"])
    assert code == 0
    assert "1 nights measured, 0 failed" in capsys.readouterr().out
    assert json.loads(json.dumps(load_cohort(tmp_path / "out").nights["ahi"].tolist()))[0] is not None


# ---- questions across nights (tools, session, `ask`) -------------------------------------------
def _ask_json(capsys, *argv) -> dict:
    import cli

    assert cli.main(["ask", *argv, "--llm", "none", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_ask_a_cohort_folder_which_nights_are_over_a_threshold(full_run, capsys):
    out, cohort = full_run
    record = _ask_json(capsys, str(out), "which nights have AHI over 20?")
    (call,) = record["tool_calls"]
    assert call["name"] == "find_nights" and call["args"] == {"metric": "ahi", "above": 20.0}
    expected = cohort.done[cohort.done["ahi"] > 20].sort_values("ahi", ascending=False)
    assert [n["night_id"] for n in call["result"]["nights"]] == expected["night_id"].tolist() and len(expected) >= 1
    for row in expected.itertuples():
        assert row.night_id in record["answer"] and f"{round(row.ahi, 2):g}" in record["answer"]
    assert not record["grounding"]["unmatched"]


def test_compare_to_cohort_gives_median_percentile_and_a_figure(full_run):
    from tools import run_tool
    from tools.cohort import COHORT_TOOLS, CohortContext

    _, cohort = full_run
    context = CohortContext(tables=cohort)
    night = cohort.done.sort_values("ahi").iloc[0]
    message = run_tool("compare_to_cohort", {"night": night["night_id"][:8], "metrics": ["ahi", "se_pct"]}, context,
                       tools=COHORT_TOOLS)
    result = json.loads(message.content)
    others = cohort.done[cohort.done["night_id"] != night["night_id"]]
    ahi = result["comparison"][0]
    assert ahi["value"] == pytest.approx(night["ahi"]) and ahi["cohort_median"] == pytest.approx(others["ahi"].median(), abs=0.01)
    assert ahi["percentile"] == 0 and message.artifact is not None  # the lowest AHI of the cohort
    unknown = run_tool("compare_to_cohort", {"night": "no such night"}, context, tools=COHORT_TOOLS)
    assert unknown.status == "error" and night["night_id"] in unknown.content


def test_ask_two_nights_of_one_person_says_whether_ahi_improved(ray_session, cohort_input, capsys):
    severe, mild = cohort_input / "subject0" / "night0.edf", cohort_input / "subject1" / "night1.edf"
    record = _ask_json(capsys, str(severe), str(mild), "did AHI improve between night 1 and night 2?")
    (call,) = record["tool_calls"]
    assert call["name"] == "compare_nights" and call["status"] == "success"
    ahi = next(row for row in call["result"]["comparison"] if row["metric"] == "ahi")
    assert ahi["first"] > ahi["second"] and ahi["verdict"] == "improved"
    assert "night 1" in record["answer"] and "night 2" in record["answer"] and "improved" in record["answer"]
    assert "night0" not in json.dumps(record) and PATIENT_NAME not in json.dumps(record)


def test_cohort_agent_uses_the_cohort_tools_and_prompt(full_run, scripted_model):
    from langchain_core.messages import ToolMessage

    from assistant.cohort import CohortSession
    from conftest import call

    def answer(messages):
        result = json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)
        return " ".join(result["findings"][1:])

    session = CohortSession(llm=scripted_model(call("find_nights", metric="ahi", above=20), answer))
    session.load(full_run[0])
    turn = session.ask("which nights have AHI over 20?")
    assert turn.mode == "agent" and turn.tool_calls[0]["status"] == "success"
    assert not turn.grounding["unmatched"] and turn.grounding["matched"]
    assert any("COHORT" in m["content"] for m in turn.llm_messages if m["role"] == "system")
    session.close()
